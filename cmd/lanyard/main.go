// Command lanyard runs the Lanyard CA (`lanyard ca`), a development
// environment (`lanyard dev`) and the issuance benchmark (`lanyard bench`).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lanyard:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "lanyard",
		Short:         "Short-lived SPIFFE identities for every workload in a Kubernetes service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(caCmd(), agentCmd(), devCmd(), benchCmd())
	return root
}

// tuneGC trades memory for CPU in the CA, whose heap is small and whose
// work allocates a lot per certificate (ASN.1, JSON, protobuf): the GC runs
// at 200 % heap growth instead of 100 % unless GOGC says otherwise.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

func caCmd() *cobra.Command {
	var (
		configPath string
		over       FileConfig
	)
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Run the CA server",
		Long: `Run the Lanyard CA: verifies Kubernetes service-account tokens and issues
SPIFFE X.509-SVIDs over gRPC/TLS (default :8443), with health and metrics on
HTTP (default :9090). Configuration comes from --config (YAML); flags override it.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			flags := cmd.Flags()
			if flags.Changed("trust-domain") {
				cfg.TrustDomain = over.TrustDomain
			}
			if flags.Changed("listen") {
				cfg.ListenAddr = over.ListenAddr
			}
			if flags.Changed("http-listen") {
				cfg.HTTPAddr = over.HTTPAddr
			}
			if flags.Changed("data-dir") {
				cfg.DataDir = over.DataDir
			}
			if flags.Changed("bundle-file") {
				cfg.BundleFile = over.BundleFile
			}
			if flags.Changed("log-level") {
				cfg.Log.Level = over.Log.Level
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return err
			}
			tuneGC()
			p, err := buildCA(cmd.Context(), cfg, log, nil)
			if err != nil {
				return err
			}
			return p.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&over.TrustDomain, "trust-domain", "", "trust domain (default cluster.local)")
	f.StringVar(&over.ListenAddr, "listen", "", "gRPC/TLS listen address (default :8443)")
	f.StringVar(&over.HTTPAddr, "http-listen", "", "health and metrics listen address (default :9090)")
	f.StringVar(&over.DataDir, "data-dir", "", "data directory (default /var/lib/lanyard)")
	f.StringVar(&over.BundleFile, "bundle-file", "", "write the trust bundle (PEM) here and keep it current")
	f.StringVar(&over.Log.Level, "log-level", "", "debug, info, warn or error")
	return cmd
}
