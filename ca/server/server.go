package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/internal/atomicfile"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// MaxRecvMsgSize bounds one request: a full batch of CSRs and tokens.
const MaxRecvMsgSize = 16 << 20

// Config configures the CA's gRPC and HTTP servers.
type Config struct {
	// Addr is the gRPC/TLS listen address (default ":8443"); HTTPAddr
	// serves /healthz, /readyz and /metrics (default ":9090").
	Addr     string
	HTTPAddr string
	CA       *ca.CA
	// Authority supplies the signing intermediate and the bundle.
	Authority *ca.Authority
	Tokens    TokenVerifier
	Store     storage.Store
	// ServingDNSNames and ServingIPs go into the CA's own serving
	// certificate beside spiffe://<td>/lanyard/ca.
	ServingDNSNames []string
	ServingIPs      []net.IP
	// ServingTTL of the serving certificate (default 24h, renewed at half-life
	// and whenever the intermediate changes).
	ServingTTL time.Duration
	// AgentAudience is the audience of tokens sent to the Lanyard API
	// (default "lanyard").
	AgentAudience string
	// AgentServiceAccounts ("namespace/name") may attest as node agents.
	AgentServiceAccounts []string
	// TrustUnixAttestation accepts workloads an agent identified with its
	// unix attestor (dev mode, non-Kubernetes hosts).
	TrustUnixAttestation bool
	// AgentPods checks workloads agents identified with their k8s
	// attestor: the pod must run on the agent's node. Nil refuses them.
	AgentPods PodFinder
	// MaxInFlight signing operations (default 64×GOMAXPROCS); a request
	// waiting longer than OverloadWait (default 5s) gets ResourceExhausted.
	MaxInFlight  int
	OverloadWait time.Duration
	// MaxQueued bounds the batch entries admitted and waiting for a slot
	// (default 16384, some 8 s of work on 2 cores); a batch that would pass it is
	// refused whole with ResourceExhausted before any work is done.
	MaxQueued int
	// Profiling serves net/http/pprof under /debug/pprof/ on the HTTP
	// address (off by default: it exposes internals).
	Profiling bool
	// BundleFile, when set, is kept up to date with the trust bundle (PEM).
	BundleFile string
	// Istio, when set, serves Istio's certificate API
	// (/istio.v1.auth.IstioCertificateService/CreateCertificate) on the
	// same port, sharing the signing limiter with the Lanyard API.
	Istio *IstioConfig
	// Limits bounds streams, headers, unauthenticated requests and
	// WatchBundle streams per peer; zero fields take the defaults.
	Limits Limits
	// Register, when set, registers more services on the gRPC server.
	Register   func(*grpc.Server)
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Metrics    *Metrics
	Logger     *slog.Logger
	Clock      func() time.Time
}

// Server is the CA's network face.
type Server struct {
	cfg     Config
	grpcLis net.Listener
	httpLis net.Listener
	grpc    *grpc.Server
	http    *http.Server
	health  *health.Server
	serving *servingCert
	metrics *Metrics
	istio   *istioService // nil unless Config.Istio is set
	// stopping is closed when Run begins to stop.
	stopping chan struct{}
}

// New validates cfg and binds both listeners.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil || cfg.Authority == nil || cfg.Tokens == nil || cfg.Store == nil {
		return nil, errors.New("server: CA, authority, tokens and store are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":8443"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = ":9090"
	}
	if cfg.ServingTTL == 0 {
		cfg.ServingTTL = 24 * time.Hour
	}
	if cfg.AgentAudience == "" {
		cfg.AgentAudience = "lanyard"
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 64 * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = 16384
	}
	if cfg.OverloadWait == 0 {
		cfg.OverloadWait = 5 * time.Second
	}
	if cfg.Registerer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer, cfg.Gatherer = reg, reg
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics(cfg.Registerer)
	}
	s := &Server{cfg: cfg, metrics: m, health: health.NewServer(), stopping: make(chan struct{})}
	s.serving = &servingCert{ca: cfg.CA, keys: cfg.Authority, dns: cfg.ServingDNSNames, ips: cfg.ServingIPs, ttl: cfg.ServingTTL, clock: cfg.Clock}

	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetCertificate:     s.serving.getCertificate,
		ClientAuth:         tls.VerifyClientCertIfGiven,
		GetConfigForClient: nil,
	}
	pools := &clientCAs{bundler: cfg.Authority}
	tlsCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := tlsCfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pools.pool()
		return c, nil
	}
	cfg.Limits.fill()
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(unaryInterceptor(cfg.Logger, m)),
		grpc.ChainStreamInterceptor(streamInterceptor(cfg.Logger, m)),
	}, cfg.Limits.serverOptions(cfg.Clock)...)...)
	cas := &caService{
		ca: cfg.CA, tokens: cfg.Tokens, bundler: cfg.Authority, store: cfg.Store,
		limit: newLimiter(cfg.MaxInFlight, cfg.OverloadWait, cfg.MaxQueued, m), metrics: m, log: cfg.Logger,
		audience: cfg.AgentAudience, agents: cfg.AgentServiceAccounts, unix: cfg.TrustUnixAttestation, clock: cfg.Clock,
		stopping: s.stopping, banned: newBannedCache(cfg.Store, cfg.Clock), pods: cfg.AgentPods,
	}
	cav1.RegisterCAServiceServer(s.grpc, cas)
	if cfg.Istio != nil {
		is, err := newIstioService(*cfg.Istio, cas, cfg.Clock)
		if err != nil {
			return nil, err
		}
		s.istio = is
		istiopb.RegisterIstioCertificateServiceServer(s.grpc, is)
	}
	if cfg.Register != nil {
		cfg.Register(s.grpc)
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	if cfg.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	var err error
	if s.grpcLis, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	return s, nil
}

// Addr is the bound gRPC address; HTTPAddr the bound HTTP address.
func (s *Server) Addr() net.Addr     { return s.grpcLis.Addr() }
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// Run serves until ctx is cancelled, then stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.serving.renew(ctx); err != nil {
		s.cfg.Logger.Warn("first serving certificate", "error", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error { s.maintain(ctx); return nil })
	g.Go(func() error {
		<-ctx.Done()
		s.health.Shutdown()
		close(s.stopping)
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.grpc.Stop()
		}
		shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.http.Shutdown(shCtx)
	})
	s.cfg.Logger.Info("CA serving", "grpc", s.Addr().String(), "http", s.HTTPAddr().String())
	return g.Wait()
}

// maintain renews the serving certificate, writes the bundle file and keeps
// readiness and expiry gauges current.
func (s *Server) maintain(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var writtenSeq int64 = -1
	for {
		b := s.cfg.Authority.Bundle()
		if s.cfg.BundleFile != "" && b.Sequence != writtenSeq && len(b.Roots) > 0 {
			if err := WriteBundleFile(s.cfg.BundleFile, b.Roots); err != nil {
				s.cfg.Logger.Error("write bundle file", "path", s.cfg.BundleFile, "error", err)
			} else {
				writtenSeq = b.Sequence
			}
		}
		s.metrics.BundleSequence.Set(float64(b.Sequence))
		for _, r := range b.Roots {
			s.metrics.CAExpiry.WithLabelValues("root").Set(float64(r.NotAfter.Unix()))
		}
		if x, err := s.cfg.Authority.Current(); err == nil {
			s.metrics.CAExpiry.WithLabelValues("intermediate").Set(float64(x.Certificate.NotAfter.Unix()))
		}
		if s.serving.due() {
			if err := s.serving.renew(ctx); err != nil {
				s.cfg.Logger.Error("renew serving certificate", "error", err)
			}
		}
		if c := s.serving.current(); c != nil {
			s.metrics.ServingExpiry.Set(float64(c.Leaf.NotAfter.Unix()))
		}
		if s.ready(ctx) == nil {
			s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		} else {
			s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.cfg.Authority.BundleChanged():
		}
	}
}

// ready is nil when the CA can sign and record.
func (s *Server) ready(ctx context.Context) error {
	if _, err := s.cfg.Authority.Current(); err != nil {
		return err
	}
	if s.serving.current() == nil {
		return fmt.Errorf("%w: no serving certificate", ca.ErrNotReady)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(r.Context()); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// WriteBundleFile writes roots as PEM to path atomically (0644).
func WriteBundleFile(path string, roots []*x509.Certificate) error {
	var data []byte
	for _, r := range roots {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return atomicfile.Write(path, data, 0o644)
}
