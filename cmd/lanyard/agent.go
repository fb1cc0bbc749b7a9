package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/agent/sds"
	"github.com/lanyard-id/lanyard/agent/workloadapi"
)

// AgentConfig is the YAML configuration of `lanyard agent`.
type AgentConfig struct {
	// CAAddr is the CA's gRPC address; TrustDomain its trust domain.
	CAAddr      string `yaml:"caAddr"`
	TrustDomain string `yaml:"trustDomain"`
	// BundleFile is the bootstrap trust bundle (PEM) the CA is checked
	// against until the CA's bundle stream takes over.
	BundleFile string `yaml:"bundleFile"`
	// TokenFile is the agent's own projected token (audience "lanyard").
	TokenFile string `yaml:"tokenFile"`
	// Cluster names the cluster whose issuer verifies the agent's token.
	Cluster string `yaml:"cluster"`
	// SocketPath serves SDS and the Workload API; SocketMode is its mode
	// ("0600" or "0660").
	SocketPath string `yaml:"socketPath"`
	SocketMode string `yaml:"socketMode"`
	// HTTPAddr serves /healthz, /readyz and /metrics.
	HTTPAddr string `yaml:"httpAddr"`
	// CacheFile keeps SVIDs on disk so a restart during a CA outage can
	// serve at once. Empty disables it.
	CacheFile string `yaml:"cacheFile"`
	// SVIDTTL requested for workloads (0: the CA default).
	SVIDTTL time.Duration `yaml:"svidTTL"`
	// Sidecar mode: serve only the pod whose projected token is here.
	Sidecar struct {
		TokenFile string `yaml:"tokenFile"`
	} `yaml:"sidecar"`
	Attestors struct {
		Unix *struct {
			Rules []UnixRuleConfig `yaml:"rules"`
		} `yaml:"unix"`
		K8s *struct {
			// NodeName defaults to $NODE_NAME.
			NodeName   string `yaml:"nodeName"`
			Kubeconfig string `yaml:"kubeconfig"`
			ProcRoot   string `yaml:"procRoot"`
		} `yaml:"k8s"`
	} `yaml:"attestors"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
}

// UnixRuleConfig maps a peer uid (and optionally gid) to a service account.
type UnixRuleConfig struct {
	UID            *uint32 `yaml:"uid"`
	GID            *uint32 `yaml:"gid"`
	Namespace      string  `yaml:"namespace"`
	ServiceAccount string  `yaml:"serviceAccount"`
}

func defaultAgentConfig() AgentConfig {
	var c AgentConfig
	c.TrustDomain = "cluster.local"
	c.SocketPath = "/run/lanyard/agent.sock"
	c.SocketMode = "0660"
	c.HTTPAddr = ":9091"
	c.TokenFile = "/var/run/secrets/lanyard/token"
	c.Log.Level, c.Log.Format = "info", "text"
	return c
}

func loadAgentConfig(path string) (AgentConfig, error) {
	c := defaultAgentConfig()
	err := decodeYAMLFile(path, &c)
	return c, err
}

func agentCmd() *cobra.Command {
	var configPath, caAddr, socket, bundle, token string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent (Envoy SDS and SPIFFE Workload API on a Unix socket)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadAgentConfig(configPath)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("ca-addr") {
				cfg.CAAddr = caAddr
			}
			if f.Changed("socket") {
				cfg.SocketPath = socket
			}
			if f.Changed("bundle-file") {
				cfg.BundleFile = bundle
			}
			if f.Changed("token-file") {
				cfg.TokenFile = token
			}
			log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return err
			}
			tokenFile := cfg.TokenFile
			p, err := buildAgent(cfg, log, func() (string, error) {
				b, err := os.ReadFile(tokenFile)
				return string(b), err
			})
			if err != nil {
				return err
			}
			return p.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&caAddr, "ca-addr", "", "CA gRPC address")
	f.StringVar(&socket, "socket", "", "Unix socket for SDS and the Workload API")
	f.StringVar(&bundle, "bundle-file", "", "bootstrap trust bundle (PEM)")
	f.StringVar(&token, "token-file", "", "the agent's projected service-account token")
	return cmd
}

// agentProcess is a wired agent.
type agentProcess struct {
	cfg      AgentConfig
	log      *slog.Logger
	client   *agent.Client
	manager  *agent.Manager
	k8s      *attest.K8s
	grpc     *grpc.Server
	listener net.Listener
	http     *http.Server
	httpLis  net.Listener
}

func buildAgent(cfg AgentConfig, log *slog.Logger, token func() (string, error)) (*agentProcess, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	if cfg.CAAddr == "" || cfg.BundleFile == "" {
		return nil, errors.New("agent: caAddr and bundleFile are required")
	}
	bundle, err := x509bundle.Load(td, cfg.BundleFile)
	if err != nil {
		return nil, fmt.Errorf("bootstrap bundle: %w", err)
	}
	mode, err := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if err != nil {
		return nil, fmt.Errorf("socketMode %q: %w", cfg.SocketMode, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)
	var manager *agent.Manager // set below, before anything runs
	client, err := agent.NewClient(agent.ClientConfig{
		Addr: cfg.CAAddr, TrustDomain: td, Bundle: bundle, Token: token, Cluster: cfg.Cluster,
		Workloads: func() int { return manager.Workloads() }, Logger: log.With("component", "ca-client"),
	})
	if err != nil {
		return nil, err
	}
	manager, err = agent.NewManager(agent.ManagerConfig{
		Signer: client, TrustDomain: td, TTL: cfg.SVIDTTL, CacheFile: cfg.CacheFile,
		Metrics: metrics, Logger: log.With("component", "svids"),
	})
	if err != nil {
		return nil, err
	}
	if _, ok := manager.Bundles().Get(td); !ok {
		manager.SetBundle(bundle)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lanyard_agent_bundle_sequence", Help: "Sequence of the trust bundle last received from the CA (0: none yet).",
	}, func() float64 { return float64(client.BundleSequence()) }))
	guard, err := agent.NewGuard(agent.GuardConfig{Next: manager})
	if err != nil {
		return nil, err
	}
	p := &agentProcess{cfg: cfg, log: log, client: client, manager: manager}
	attestors, err := p.buildAttestors(cfg, log)
	if err != nil {
		return nil, err
	}
	identifier, err := attest.NewIdentifier(attest.IdentifierConfig{
		TrustDomain: td, Attestors: attestors, TokenFile: cfg.Sidecar.TokenFile, Logger: log.With("component", "attest"),
	})
	if err != nil {
		return nil, err
	}
	// Pushes and NACKs are the SDS server's own; streams and SVIDs served
	// are the agent's vectors with api="sds".
	sdsMetrics := sds.NewMetrics(reg)
	sdsMetrics.Streams = metrics.Streams.WithLabelValues("sds")
	sdsMetrics.SVIDsServed = metrics.SVIDsServed.WithLabelValues("sds")
	sdsSrv, err := sds.New(sds.Config{
		Identifier: identifier, Identities: guard, Log: log.With("component", "sds"), Metrics: sdsMetrics,
	})
	if err != nil {
		return nil, err
	}
	wlSrv, err := workloadapi.New(workloadapi.Config{
		Identifier: identifier, Identities: guard, Logger: log.With("component", "workloadapi"),
		Streams: metrics.Streams.WithLabelValues("workloadapi"), SVIDsServed: metrics.SVIDsServed.WithLabelValues("workloadapi"),
	})
	if err != nil {
		return nil, err
	}
	p.grpc = grpc.NewServer(append(agent.SocketServerOptions(), grpc.Creds(attest.NewCredentials("")))...)
	sdsSrv.Register(p.grpc)
	wlSrv.Register(p.grpc)
	if p.listener, err = agent.ListenSocket(cfg.SocketPath, os.FileMode(mode)); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", p.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	p.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if p.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		p.listener.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	return p, nil
}

func (p *agentProcess) buildAttestors(cfg AgentConfig, log *slog.Logger) ([]attest.Attestor, error) {
	var out []attest.Attestor
	if k := cfg.Attestors.K8s; k != nil {
		node := k.NodeName
		if node == "" {
			node = os.Getenv("NODE_NAME")
		}
		client, err := kubeClient(k.Kubeconfig)
		if err != nil {
			return nil, err
		}
		p.k8s, err = attest.NewK8s(attest.K8sConfig{Client: client, NodeName: node, ProcRoot: k.ProcRoot, Logger: log.With("component", "k8s-attestor")})
		if err != nil {
			return nil, err
		}
		out = append(out, p.k8s)
	}
	if u := cfg.Attestors.Unix; u != nil {
		var rules []attest.UnixRule
		for _, r := range u.Rules {
			rules = append(rules, attest.UnixRule{UID: r.UID, GID: r.GID, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount})
		}
		ux, err := attest.NewUnix(attest.UnixConfig{Rules: rules})
		if err != nil {
			return nil, err
		}
		out = append(out, ux)
	}
	return out, nil
}

// readyz: the agent can serve once it is attested, or holds valid SVIDs
// (from its disk cache, during a CA outage), so that a rolling update is
// not stalled by an outage.
func (p *agentProcess) readyz(w http.ResponseWriter, _ *http.Request) {
	if p.client.AgentSVID() == nil && !p.manager.Serving() {
		http.Error(w, "not ready: not attested and no cached SVID", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// run serves the socket at once (cached SVIDs are served even while the CA
// is unreachable), attests in the background and keeps everything current.
func (p *agentProcess) run(ctx context.Context) error {
	defer p.client.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.client.RunAgentSVID(ctx) })
	g.Go(func() error { return p.client.RunBundle(ctx, p.manager.SetBundle, p.manager.CAReachable) })
	g.Go(func() error { return p.manager.Run(ctx) })
	if p.k8s != nil {
		g.Go(func() error { return p.k8s.Run(ctx) })
	}
	g.Go(func() error { return p.grpc.Serve(p.listener) })
	g.Go(func() error {
		if err := p.http.Serve(p.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		p.grpc.Stop() // streams are long-lived; workloads reconnect
		shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.http.Shutdown(shCtx)
	})
	p.log.Info("agent serving", "socket", p.cfg.SocketPath, "ca", p.cfg.CAAddr, "http", p.httpLis.Addr().String())
	return g.Wait()
}
