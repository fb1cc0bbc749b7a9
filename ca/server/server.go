package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/serving"
	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// MaxRecvMsgSize bounds one request: a full batch of CSRs and tokens.
const MaxRecvMsgSize = 16 << 20

// Config configures the CA's gRPC server.
type Config struct {
	// Addr is the gRPC/TLS listen address (default ":8443").
	Addr string
	CA   *ca.CA
	// Authority supplies the signing intermediate and the bundle.
	Authority *ca.Authority
	Tokens    TokenVerifier
	Store     storage.Store
	// Serving is the CA's TLS certificate (ca/serving), renewed by its own
	// Run. Required.
	Serving *serving.Cert
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
	// Istio, when set, serves Istio's certificate API
	// (/istio.v1.auth.IstioCertificateService/CreateCertificate) on the
	// same port, sharing the signing limiter with the Lanyard API.
	Istio *IstioConfig
	// Controls are the admin's bans, evictions and deny list (run by the
	// caller); nil enforces none. Admin, when set, serves the admin API
	// (it needs Controls). ReportFlush is how often agents' reports are
	// written to the store (default DefaultReportFlush).
	Controls    *ca.Controls
	Admin       *AdminConfig
	ReportFlush time.Duration
	// Limits bounds streams, headers, unauthenticated requests and
	// WatchBundle streams per peer; zero fields take the defaults.
	Limits Limits
	// Register, when set, registers more services on the gRPC server.
	Register   func(*grpc.Server)
	Registerer prometheus.Registerer
	Metrics    *Metrics
	Logger     *slog.Logger
	Clock      func() time.Time
}

// Server is the CA's gRPC face.
type Server struct {
	cfg     Config
	grpcLis net.Listener
	grpc    *grpc.Server
	health  *health.Server
	metrics *Metrics
	istio   *istioService // nil unless Config.Istio is set
	admin   *adminService // nil unless Config.Admin is set
	// adminGRPC serves the admin API on Config.Admin.Socket.
	adminGRPC *grpc.Server
	reports   *agentReports
	// stopping is closed when Run begins to stop.
	stopping chan struct{}
}

// New validates cfg and binds the listener.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil || cfg.Authority == nil || cfg.Tokens == nil || cfg.Store == nil || cfg.Serving == nil {
		return nil, errors.New("server: CA, authority, tokens, store and serving certificate are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":8443"
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
		cfg.Registerer = prometheus.NewRegistry()
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

	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetCertificate:     cfg.Serving.GetCertificate,
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
	banned := newBannedCache(cfg.Store, cfg.Clock)
	s.reports = newAgentReports(cfg.Store, cfg.ReportFlush, cfg.Logger)
	unary := []grpc.UnaryServerInterceptor{unaryInterceptor(cfg.Logger, m)}
	stream := []grpc.StreamServerInterceptor{streamInterceptor(cfg.Logger, m)}
	if cfg.Admin != nil {
		var err error
		if s.admin, err = newAdminService(*cfg.Admin, s, banned); err != nil {
			return nil, err
		}
		unary, stream = append(unary, s.admin.unaryAuth), append(stream, s.admin.streamAuth)
	}
	cfg.Limits.fill()
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, cfg.Limits.serverOptions(cfg.Clock)...)...)
	cas := &caService{
		ca: cfg.CA, tokens: cfg.Tokens, bundler: cfg.Authority, store: cfg.Store,
		limit: newLimiter(cfg.MaxInFlight, cfg.OverloadWait, cfg.MaxQueued, m), metrics: m, log: cfg.Logger,
		audience: cfg.AgentAudience, agents: cfg.AgentServiceAccounts, unix: cfg.TrustUnixAttestation, clock: cfg.Clock,
		stopping: s.stopping, banned: banned, pods: cfg.AgentPods, controls: cfg.Controls, reports: s.reports,
	}
	cav1.RegisterCAServiceServer(s.grpc, cas)
	if s.admin != nil {
		adminv1.RegisterAdminServiceServer(s.grpc, s.admin)
		if cfg.Admin.Socket != nil {
			s.adminGRPC = grpc.NewServer(
				grpc.Creds(attest.NewCredentials("")),
				grpc.ChainUnaryInterceptor(unary...),
				grpc.ChainStreamInterceptor(stream...),
			)
			adminv1.RegisterAdminServiceServer(s.adminGRPC, s.admin)
		}
	}
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

	var err error
	if s.grpcLis, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	return s, nil
}

// Close releases the listener of a server that will not Run.
func (s *Server) Close() error { return s.grpcLis.Close() }

// Addr is the bound gRPC address.
func (s *Server) Addr() net.Addr { return s.grpcLis.Addr() }

// Run serves until ctx is cancelled, then stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error { s.maintain(ctx); return nil })
	g.Go(func() error { return s.reports.run(ctx) })
	if s.admin != nil {
		g.Go(func() error { return s.admin.runSummary(ctx) })
		g.Go(func() error { return s.admin.runHeartbeat(ctx) })
	}
	if s.adminGRPC != nil {
		g.Go(func() error {
			if err := s.adminGRPC.Serve(s.cfg.Admin.Socket); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("serve admin socket: %w", err)
			}
			return nil
		})
	}
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
		if s.adminGRPC != nil {
			s.adminGRPC.Stop()
		}
		return nil
	})
	s.cfg.Logger.Info("CA serving", "grpc", s.Addr().String())
	return g.Wait()
}

// maintain keeps the readiness (gRPC health service) and the expiry and
// bundle gauges current.
func (s *Server) maintain(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		b := s.cfg.Authority.Bundle()
		s.metrics.BundleSequence.Set(float64(b.Sequence))
		for _, r := range b.Roots {
			s.metrics.CAExpiry.WithLabelValues("root").Set(float64(r.NotAfter.Unix()))
		}
		if x, err := s.cfg.Authority.Current(); err == nil {
			s.metrics.CAExpiry.WithLabelValues("intermediate").Set(float64(x.Certificate.NotAfter.Unix()))
		}
		if c := s.cfg.Serving.Current(); c != nil {
			s.metrics.ServingExpiry.Set(float64(c.Leaf.NotAfter.Unix()))
		}
		if s.Ready(ctx) == nil {
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

// Ready is nil when the CA can sign and record: an unexpired
// intermediate, a serving certificate and a store that answers.
func (s *Server) Ready(ctx context.Context) error {
	if _, err := s.cfg.Authority.Current(); err != nil {
		return err
	}
	if s.cfg.Serving.Current() == nil {
		return fmt.Errorf("%w: no serving certificate", ca.ErrNotReady)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
