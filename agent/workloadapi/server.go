package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/lanyard-id/lanyard/agent"
)

// Identifier tells which workload makes a call (*attest.Identifier).
type Identifier interface {
	// Identify returns the caller; an error wrapping agent.ErrNotIdentified
	// when it cannot be identified.
	Identify(ctx context.Context) (agent.Workload, error)
}

// Identities hands out a workload's SVID and bundles (*agent.Manager).
type Identities interface {
	Subscribe(ctx context.Context, w agent.Workload) (agent.Subscription, error)
}

// Gauge goes up and down; a prometheus.Gauge is one.
type Gauge interface {
	Inc()
	Dec()
}

// Counter only goes up; a prometheus.Counter is one.
type Counter interface {
	Inc()
}

// Config configures a Server.
type Config struct {
	// Identifier and Identities are required.
	Identifier Identifier
	Identities Identities
	// Streams counts the FetchX509SVID and FetchX509Bundles streams being
	// served (identified and subscribed). Optional.
	Streams Gauge
	// SVIDsServed counts X509SVIDResponse messages sent, each carrying one
	// X.509-SVID with its key. Optional.
	SVIDsServed Counter
	// Logger receives stream events (never keys or tokens). Default: discard.
	Logger *slog.Logger
}

// Server serves the SPIFFE Workload API's X.509-SVID profile. The JWT-SVID
// and WIT-SVID profiles answer Unimplemented.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	id      Identifier
	ids     Identities
	streams Gauge
	served  Counter
	log     *slog.Logger
}

var _ workload.SpiffeWorkloadAPIServer = (*Server)(nil)

// New validates cfg and fills defaults.
func New(cfg Config) (*Server, error) {
	if cfg.Identifier == nil || cfg.Identities == nil {
		return nil, errors.New("workload api: identifier and identities are required")
	}
	if cfg.Streams == nil {
		cfg.Streams = nopMetric{}
	}
	if cfg.SVIDsServed == nil {
		cfg.SVIDsServed = nopMetric{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{id: cfg.Identifier, ids: cfg.Identities, streams: cfg.Streams, served: cfg.SVIDsServed, log: cfg.Logger}, nil
}

// Register adds the Workload API service to a gRPC server (the agent's
// socket server, shared with SDS).
func (s *Server) Register(r grpc.ServiceRegistrar) {
	workload.RegisterSpiffeWorkloadAPIServer(r, s)
}

// FetchX509SVID streams the caller's X.509-SVID, its key and the bundles:
// a first response as soon as the SVID is there (never an empty one while
// it is being fetched), then one on every rotation or bundle change.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return serve(s, stream.Context(), "FetchX509SVID",
		func(_ agent.Workload, sub agent.Subscription) (*workload.X509SVIDResponse, bool, error) {
			return x509SVIDResponse(sub)
		},
		func(resp *workload.X509SVIDResponse) error {
			if err := stream.Send(resp); err != nil {
				return err
			}
			s.served.Inc()
			return nil
		})
}

// FetchX509Bundles streams the X.509 bundles the caller should trust: its
// trust domain's and the federated ones, on every change. The caller must
// be identified and not refused by the CA; its SVID need not be issued yet.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return serve(s, stream.Context(), "FetchX509Bundles", x509BundlesResponse, stream.Send)
}

// serve identifies the caller, subscribes to its identity, and sends what
// build makes of the subscription each time it changes. build returns
// ok false while there is nothing to send yet; a response equal to the
// last one sent is not sent again.
func serve[T proto.Message](s *Server, ctx context.Context, method string,
	build func(agent.Workload, agent.Subscription) (resp T, ok bool, err error),
	send func(T) error,
) error {
	log := s.log.With("method", method)
	if err := checkSecurityHeader(ctx); err != nil {
		return agent.Status(log, "workload api call refused", err)
	}
	w, err := s.id.Identify(ctx)
	if err != nil {
		return agent.Status(log, "workload api caller refused", err)
	}
	log = log.With("spiffe_id", w.ID.String())
	sub, err := s.ids.Subscribe(ctx, w)
	if err != nil {
		return agent.Status(log, "workload api subscribe failed", err)
	}
	defer sub.Close()
	s.streams.Inc()
	defer s.streams.Dec()
	log.Debug("workload api stream started")

	var last T
	sent := false
	for {
		resp, ok, err := build(w, sub)
		if err != nil {
			return agent.Status(log, "workload api stream ended", err)
		}
		if ok && (!sent || !proto.Equal(resp, last)) {
			if err := send(resp); err != nil {
				log.Debug("workload api send failed", "error", err)
				return err
			}
			last, sent = resp, true
		}
		select {
		case <-ctx.Done():
			log.Debug("workload api stream closed by the client")
			return nil
		case _, ok := <-sub.Updates():
			if !ok {
				return agent.Status(log, "workload api stream ended", fmt.Errorf("%w: the agent is shutting down", agent.ErrNotReady))
			}
		}
	}
}

// The JWT-SVID and WIT-SVID profiles are not served yet. The security
// header is still checked first, as for every Workload API call.

// FetchJWTSVID answers Unimplemented.
func (s *Server) FetchJWTSVID(ctx context.Context, _ *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	return nil, s.unimplemented(ctx, "JWT-SVIDs")
}

// FetchJWTBundles answers Unimplemented.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	return s.unimplemented(stream.Context(), "JWT bundles")
}

// ValidateJWTSVID answers Unimplemented.
func (s *Server) ValidateJWTSVID(ctx context.Context, _ *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	return nil, s.unimplemented(ctx, "JWT-SVID validation")
}

// FetchWITSVID answers Unimplemented.
func (s *Server) FetchWITSVID(_ *workload.WITSVIDRequest, stream workload.SpiffeWorkloadAPI_FetchWITSVIDServer) error {
	return s.unimplemented(stream.Context(), "WIT-SVIDs")
}

// FetchWITBundles answers Unimplemented.
func (s *Server) FetchWITBundles(_ *workload.WITBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchWITBundlesServer) error {
	return s.unimplemented(stream.Context(), "WIT bundles")
}

func (s *Server) unimplemented(ctx context.Context, what string) error {
	err := checkSecurityHeader(ctx)
	if err == nil {
		err = fmt.Errorf("%s are %w", what, agent.ErrUnimplemented)
	}
	return agent.Status(s.log, "workload api call not served", err)
}

type nopMetric struct{}

func (nopMetric) Inc() {}
func (nopMetric) Dec() {}
