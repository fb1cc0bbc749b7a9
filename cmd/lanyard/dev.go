package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/internal/atomicfile"
)

// Development-only settings of `lanyard dev`.
const (
	devIssuer  = "https://lanyard-dev.invalid"
	devCluster = "dev"
	devAgentNS = "lanyard"
	devAgentSA = "lanyard-agent"
	devNode    = "dev-node"
)

func devCmd() *cobra.Command {
	var (
		dir, grpcAddr, httpAddr, agentHTTPAddr, td, logLevel string
		postgresDSN                                          string
		withAgent                                            bool
		svidTTL, intermediateTTL                             time.Duration
		upstreamConfig                                       string
		admin                                                AdminFileConfig
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development CA on 127.0.0.1 (DEVELOPMENT ONLY)",
		Long: `Run a development Lanyard on 127.0.0.1 with the embedded SQLite store in --dir,
and a DEVELOPMENT-ONLY token issuer whose keys the CA trusts. Mint tokens with
'lanyard dev token'. Never use dev mode in production: anyone who can read the
issuer key in --dir can mint any identity.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !withAgent {
				agentHTTPAddr = ""
			}
			return runDev(cmd.Context(), devOptions{dir: dir, grpcAddr: grpcAddr, httpAddr: httpAddr,
				agentHTTPAddr: agentHTTPAddr, td: td, logLevel: logLevel, svidTTL: svidTTL,
				upstreamConfig: upstreamConfig, intermediateTTL: intermediateTTL, admin: admin, postgresDSN: postgresDSN})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", ".lanyard", "state directory (root, store, dev issuer key, bundle.pem)")
	f.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:8443", "CA gRPC/TLS address")
	f.StringVar(&httpAddr, "http-addr", "127.0.0.1:9090", "health and metrics address")
	f.StringVar(&td, "trust-domain", "cluster.local", "trust domain")
	f.DurationVar(&svidTTL, "svid-ttl", 0, "TTL the dev agent asks for workload SVIDs (0: the CA default, 1h)")
	f.BoolVar(&withAgent, "agent", true, "also run a node agent (socket DIR/agent.sock)")
	f.StringVar(&agentHTTPAddr, "agent-http-addr", "127.0.0.1:9091", "node agent health and metrics address")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&upstreamConfig, "upstream-config", "", "YAML file of an upstream: section (e.g. type: vault, docs/vault.md); default a self-signed root in --dir")
	f.DurationVar(&intermediateTTL, "intermediate-ttl", 0, "TTL of the CA's intermediate, renewed at half-life (0: 24h)")
	f.StringVar(&admin.Socket, "admin-socket", "", "admin socket (default DIR/admin.sock)")
	f.StringVar(&admin.ReplicaName, "replica-name", "", "name of this CA replica in 'lanyardctl ca status' (default the host name)")
	f.StringVar(&admin.SocketMode, "admin-socket-mode", "0600", "permissions of the admin socket")
	f.StringSliceVar(&admin.AdminIDs, "admin-id", nil, "SPIFFE ID that may call the admin API over mTLS (repeat for several)")
	f.DurationVar(&admin.AuditSummaryInterval, "audit-summary-interval", time.Minute, "how often issuance and rejection counts go to the audit log")
	f.StringVar(&postgresDSN, "postgres-dsn", "", "use this PostgreSQL database as the store instead of SQLite in --dir (the root is then shared through it, sealed with DIR/root-seal.key)")
	cmd.AddCommand(devTokenCmd())
	return cmd
}

type devOptions struct {
	dir, grpcAddr, httpAddr, agentHTTPAddr, td, logLevel string
	postgresDSN                                          string
	svidTTL, intermediateTTL                             time.Duration
	upstreamConfig                                       string
	admin                                                AdminFileConfig
}

func runDev(ctx context.Context, o devOptions) error {
	dir, grpcAddr, httpAddr, agentHTTPAddr, td, logLevel := o.dir, o.grpcAddr, o.httpAddr, o.agentHTTPAddr, o.td, o.logLevel
	log, err := newLogger(logLevel, "text")
	if err != nil {
		return err
	}
	tuneGC()
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("dev dir: %w", err)
	}
	iss, err := tokens.LoadOrCreateDevIssuer(dir, devIssuer, tokens.WithDevLogger(log))
	if err != nil {
		return err
	}
	cfg := defaultConfig()
	cfg.TrustDomain = td
	cfg.ListenAddr, cfg.HTTPAddr = grpcAddr, httpAddr
	cfg.DataDir = dir
	cfg.BundleFile = filepath.Join(dir, "bundle.pem")
	cfg.ServingDNSNames = []string{"localhost"}
	cfg.ServingIPs = []string{"127.0.0.1", "::1"}
	cfg.Agents.ServiceAccounts = []string{devAgentNS + "/" + devAgentSA}
	cfg.Agents.TrustUnixAttestation = true
	cfg.Profiling = true // loopback only, dev only
	cfg.Clusters = []ClusterConfig{{Name: devCluster, Issuer: iss.Issuer(), JWKSFile: iss.JWKSPath()}}
	// Istio's API too (audience istio-ca): istio-agent sends its cluster
	// name, "Kubernetes" unless set, as ClusterID.
	cfg.Istio.Enabled = true
	cfg.Istio.ClusterAliases = map[string]string{"Kubernetes": devCluster}
	if err := decodeYAMLFile(o.upstreamConfig, &cfg.Upstream); err != nil {
		return err
	}
	if o.intermediateTTL != 0 {
		cfg.Intermediate.TTL = o.intermediateTTL
	}
	cfg.Admin = o.admin // socket DIR/admin.sock
	if o.postgresDSN != "" {
		cfg.Store.Type = "postgres"
		cfg.Store.Postgres.DSN = o.postgresDSN
		if cfg.Upstream.SelfSigned.SealKeyFile, err = devSealKey(dir); err != nil {
			return err
		}
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	p, err := buildCA(ctx, cfg, log, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- p.run(ctx) }()
	if err := waitReady(ctx, p, cfg.BundleFile, errc); err != nil {
		return err
	}
	if agentHTTPAddr == "" { // --agent=false: the CA alone
		printDevBanner(dir, p, nil)
		err := <-errc
		return err
	}
	ag, err := buildDevAgent(dir, td, p.server.Addr().String(), agentHTTPAddr, o.svidTTL, iss, log)
	if err != nil {
		cancel()
		<-errc
		return err
	}
	go func() { errc <- ag.run(ctx) }()
	printDevBanner(dir, p, ag)
	err = <-errc
	cancel()
	return errors.Join(err, <-errc)
}

// buildDevAgent wires a node agent beside the dev CA: socket DIR/agent.sock
// (0600), the unix attestor mapping the invoking user to default/default,
// its own token minted by the dev issuer for lanyard/lanyard-agent on node
// dev-node, and a disk cache in DIR.
func buildDevAgent(dir, td, caAddr, httpAddr string, svidTTL time.Duration, iss *tokens.DevIssuer, log *slog.Logger) (*agentProcess, error) {
	cfg := defaultAgentConfig()
	cfg.SVIDTTL = svidTTL
	cfg.CAAddr, cfg.TrustDomain = caAddr, td
	cfg.BundleFile = filepath.Join(dir, "bundle.pem")
	cfg.SocketPath = filepath.Join(dir, "agent.sock")
	cfg.SocketMode = "0600"
	cfg.HTTPAddr = httpAddr
	cfg.CacheFile = filepath.Join(dir, "agent", "svids.json")
	cfg.Cluster = devCluster
	uid := uint32(os.Getuid())
	cfg.Attestors.Unix = &struct {
		Rules []UnixRuleConfig `yaml:"rules"`
	}{Rules: []UnixRuleConfig{{UID: &uid, Namespace: "default", ServiceAccount: "default"}}}
	token := func() (string, error) {
		return iss.Mint(tokens.DevClaims{
			Namespace: devAgentNS, ServiceAccount: devAgentSA, Audiences: []string{"lanyard"},
			PodName: "lanyard-agent-dev", NodeName: devNode,
		})
	}
	return buildAgent(cfg, log.With("process", "agent"), token)
}

// waitReady waits until the first intermediate and the bundle file exist.
func waitReady(ctx context.Context, p *caProcess, bundleFile string, errc <-chan error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := p.authority.Current(); err == nil {
			if _, err := os.Stat(bundleFile); err == nil {
				return nil
			}
		}
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func printDevBanner(dir string, p *caProcess, ag *agentProcess) {
	bundle := filepath.Join(dir, "bundle.pem")
	if ag == nil {
		fmt.Printf("\nLanyard dev mode (CA only) — DEVELOPMENT ONLY\n  CA gRPC (TLS)  %s\n  CA HTTP        http://%s\n  trust bundle   %s\n\n",
			p.server.Addr(), p.health.Addr(), bundle)
		return
	}
	fmt.Printf(`
Lanyard dev mode — DEVELOPMENT ONLY, do not use in production
  CA gRPC (TLS)        %s
  CA health, metrics   http://%s/healthz  /readyz  /metrics
  node agent socket    %s   (Envoy SDS + SPIFFE Workload API)
  agent health         http://%s/healthz  /readyz  /metrics
  trust bundle         %s
  admin socket         %s   (lanyardctl --socket %s certs list)
  store (SQLite)       %s
  dev token issuer     %s (keys in %s)

Your user (uid %d) is attested as spiffe://%s/ns/default/sa/default. Try:
  SPIFFE_ENDPOINT_SOCKET=unix://%s go run ./examples/mtls

Mint a workload token, or fetch the bundle from the CA:
  lanyard dev token --dir %s --namespace default --service-account default --node %s
  grpcurl -cacert %s -d '{}' %s lanyard.ca.v1.CAService/GetBundle

Istio's CA API (istio.v1.auth.IstioCertificateService) is on the CA port
(CA_ADDR); its tokens need audience istio-ca: lanyard dev token --audience istio-ca ...

Press Ctrl-C to stop.
`, p.server.Addr(), p.health.Addr(), ag.cfg.SocketPath, ag.httpLis.Addr(), bundle,
		filepath.Join(dir, "admin.sock"), filepath.Join(dir, "admin.sock"), filepath.Join(dir, "lanyard.db"),
		devIssuer, filepath.Join(dir, tokens.DevIssuerJWKSFile), os.Getuid(), ag.cfg.TrustDomain, ag.cfg.SocketPath,
		dir, devNode, bundle, p.server.Addr())
}

func devTokenCmd() *cobra.Command {
	var (
		dir string
		c   tokens.DevClaims
		aud []string
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a DEVELOPMENT-ONLY Kubernetes projected service-account token",
		RunE: func(cmd *cobra.Command, _ []string) error {
			iss, err := tokens.LoadOrCreateDevIssuer(dir, devIssuer)
			if err != nil {
				return err
			}
			c.Audiences = aud
			tok, err := iss.Mint(c)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", ".lanyard", "state directory of 'lanyard dev'")
	f.StringVar(&c.Namespace, "namespace", "default", "service account namespace")
	f.StringVar(&c.ServiceAccount, "service-account", "default", "service account name")
	f.StringSliceVar(&aud, "audience", []string{"lanyard"}, "token audience (repeat for several)")
	f.DurationVar(&c.TTL, "ttl", time.Hour, "token lifetime")
	f.StringVar(&c.PodName, "pod", "", "bind the token to this pod name")
	f.StringVar(&c.NodeName, "node", "", "node name claim")
	return cmd
}

// devSealKey returns DIR/root-seal.key, made (32 random bytes, 0600) when
// missing: it seals the shared root in a PostgreSQL store.
func devSealKey(dir string) (string, error) {
	path := filepath.Join(dir, "root-seal.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, key, 0o600); err != nil {
		return "", fmt.Errorf("dev seal key: %w", err)
	}
	return path, nil
}
