package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/lanyard-id/lanyard/bench"
)

func benchCmd() *cobra.Command {
	var cfg bench.Config
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure issuance throughput and latency against the crypto floor",
		Long: `Start 'lanyard dev' as a child process on 127.0.0.1, attest node agents, and
drive BatchSignSVIDs over gRPC/mTLS from many concurrent callers with freshly
minted workload tokens. Prints certificates/s, per-call latency, the CA's CPU
time and allocations per certificate, and the crypto floor; the last line is

  issuance: <N> certs/s p50=<ms>ms p99=<ms>ms floor=<F> certs/s ratio=<N/F>

Exits non-zero if any certificate failed.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the lanyard binary (set --lanyard): %w", err)
				}
				cfg.Binary = exe
			}
			cfg.Issuer = devIssuer
			cfg.AgentNamespace, cfg.AgentServiceAccount = devAgentNS, devAgentSA
			cfg.Progress = cmd.ErrOrStderr()
			return bench.Run(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Binary, "lanyard", "", "lanyard binary to start as the CA (default: this executable)")
	f.IntVar(&cfg.Agents, "agents", 4, "node agents the callers speak as")
	f.IntVar(&cfg.Callers, "callers", 64, "concurrent BatchSignSVIDs callers")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "timed run of each phase")
	f.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up before each timed run (not counted)")
	f.IntVar(&cfg.Batch, "batch", 1, "entries per call of the main phase (the one the last line reports)")
	f.IntVar(&cfg.BigBatch, "big-batch", 32, "entries per call of the batching phase (-1 skips it)")
	f.IntVar(&cfg.Identities, "identities", 500, "distinct workload service accounts")
	f.IntVar(&cfg.CSRs, "csrs", 256, "distinct P-256 keys and CSRs")
	f.DurationVar(&cfg.FloorDuration, "floor-duration", 3*time.Second, "run time of the crypto floor")
	f.IntVar(&cfg.MaxTokens, "max-tokens", 200000, "cap on workload tokens minted per timed run (past it tokens are reused and may hit the CA's token cache)")
	f.DurationVar(&cfg.StartTimeout, "start-timeout", time.Minute, "wait for the CA to be ready")
	f.BoolVar(&cfg.KeepDir, "keep", false, "keep the state directory (CA log, store) after a successful run")
	return cmd
}
