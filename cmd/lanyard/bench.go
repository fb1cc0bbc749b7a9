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
time and allocations per certificate, and the crypto floor.

Then the rotation storm (--storm-workloads 0 skips it): --storm-agents node
agents in this process (the real agent core, attested with tokens of their
own, mTLS after) subscribe --storm-workloads workloads at once with SVIDs of
--storm-ttl, and renew them together at half-life. Prints the time to fetch
all and to renew all, the CA's CPU per certificate, the agents' batching and
their memory per workload. Each store's report ends with

  issuance: <N> certs/s p50=<ms>ms p99=<ms>ms floor=<F> certs/s ratio=<N/F> store=<store>

once per store (--stores, default sqlite then postgres).

Exits non-zero if any certificate or storm renewal failed.`,
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
	f.IntVar(&cfg.StormWorkloads, "storm-workloads", 10000, "workloads of the rotation storm (0 skips it)")
	f.IntVar(&cfg.StormAgents, "storm-agents", 100, "node agents the storm's workloads are spread over")
	f.DurationVar(&cfg.StormTTL, "storm-ttl", 40*time.Second, "TTL of the storm's SVIDs: they are renewed at half-life ±10 %")
	f.DurationVar(&cfg.StartTimeout, "start-timeout", time.Minute, "wait for the CA to be ready")
	f.StringSliceVar(&cfg.Stores, "stores", []string{"sqlite", "postgres"}, "stores to measure, one run each (postgres: a server of its own on 127.0.0.1, Debian's postgresql)")
	f.BoolVar(&cfg.KeepDir, "keep", false, "keep the state directory (CA log, store) after a successful run")
	return cmd
}
