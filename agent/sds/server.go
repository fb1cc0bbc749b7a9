package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"

	"github.com/lanyard-id/lanyard/agent"
)

// Identifier tells which workload is calling, from the call's context
// (agent/attest.Identifier: a bearer token in the metadata, else the
// attested socket peer). It returns an error wrapping
// agent.ErrNotIdentified when it cannot tell.
type Identifier interface {
	Identify(ctx context.Context) (agent.Workload, error)
}

// DefaultFetchTimeout bounds how long FetchSecrets waits for a workload's
// first SVID.
const DefaultFetchTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Identifier identifies callers. Required.
	Identifier Identifier
	// Identities hands out SVID subscriptions (*agent.Manager). Required.
	Identities agent.Identities
	// Log receives protocol events: NACKs, unknown names, refusals.
	// Default: discard.
	Log *slog.Logger
	// Metrics, optional.
	Metrics *Metrics
	// FetchTimeout bounds how long FetchSecrets waits for a pending first
	// SVID or bundle. Default DefaultFetchTimeout.
	FetchTimeout time.Duration
}

// Server serves Envoy SDS v3 (secretv3.SecretDiscoveryServiceServer).
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	cfg Config
	log *slog.Logger
}

var _ secretv3.SecretDiscoveryServiceServer = (*Server)(nil)

// New checks cfg, fills its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identifier == nil {
		return nil, errors.New("sds: Identifier is required")
	}
	if cfg.Identities == nil {
		return nil, errors.New("sds: Identities is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	return &Server{cfg: cfg, log: cfg.Log}, nil
}

// Register adds the SDS service to a gRPC server (the agent's socket).
func (s *Server) Register(r grpc.ServiceRegistrar) {
	secretv3.RegisterSecretDiscoveryServiceServer(r, s)
}

// StreamSecrets serves one SotW SDS stream: see the package docs for the
// protocol.
func (s *Server) StreamSecrets(ss grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := ss.Context()
	w, sub, err := s.subscribe(ctx, "StreamSecrets")
	if err != nil {
		return err
	}
	defer sub.Close()
	s.cfg.Metrics.streamOpened()
	defer s.cfg.Metrics.streamClosed()

	st := &stream{
		ss:      ss,
		sub:     sub,
		caller:  w.ID,
		log:     s.log.With("method", "StreamSecrets", "spiffe_id", w.ID.String()),
		metrics: s.cfg.Metrics,
	}
	return st.run(ctx)
}

// FetchSecrets answers the current state of the requested resources. A
// first SVID or bundle still pending is waited for, up to FetchTimeout;
// when it stays pending the answer is Unavailable, never an empty
// certificate.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkTypeURL(req); err != nil {
		return nil, agent.Status(s.log.With("method", "FetchSecrets"), "wrong type_url", err)
	}
	w, sub, err := s.subscribe(ctx, "FetchSecrets")
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	log := s.log.With("method", "FetchSecrets", "spiffe_id", w.ID.String())

	names, err := normalize(req.GetResourceNames())
	if err != nil {
		return nil, agent.Status(s.log.With("method", "FetchSecrets"), "request refused", err)
	}
	wait, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	var a answer
	for {
		svid, err := sub.SVID()
		if err != nil {
			return nil, agent.Status(log, "identity refused", err)
		}
		a, err = resolve(names, view{caller: w.ID, svid: svid, bundles: sub.Bundles()})
		if err != nil {
			return nil, agent.Status(log, "build secrets", fmt.Errorf("%w: %w", agent.ErrInternal, err))
		}
		if len(a.pending) == 0 {
			break
		}
		select {
		case <-sub.Updates():
			continue
		case <-wait.Done():
		}
		if ctx.Err() != nil {
			return nil, agent.Status(log, "fetch secrets", ctx.Err())
		}
		return nil, agent.Status(log.With("pending", a.pending), "secrets not ready", fmt.Errorf("%w: secrets still being fetched", agent.ErrNotReady))
	}
	if len(a.omitted) > 0 {
		log.Warn("resources not served", "names", a.omitted)
	}
	s.cfg.Metrics.served(a)
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: a.version,
		Resources:   a.resources,
		TypeUrl:     SecretTypeURL,
	}, nil
}

// DeltaSecrets is not served: Envoy uses StreamSecrets unless configured
// for delta xDS.
func (s *Server) DeltaSecrets(grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return agent.Status(s.log, "delta SDS call", fmt.Errorf("delta SDS is %w; use StreamSecrets", agent.ErrUnimplemented))
}

// subscribe identifies the caller and subscribes to its identity.
func (s *Server) subscribe(ctx context.Context, method string) (agent.Workload, agent.Subscription, error) {
	w, err := s.cfg.Identifier.Identify(ctx)
	if err != nil {
		return agent.Workload{}, nil, agent.Status(s.log.With("method", method), "workload not identified", err)
	}
	if w.ID.IsZero() {
		err := fmt.Errorf("%w: identifier returned no SPIFFE ID", agent.ErrNotIdentified)
		return agent.Workload{}, nil, agent.Status(s.log.With("method", method), "workload not identified", err)
	}
	sub, err := s.cfg.Identities.Subscribe(ctx, w)
	if err != nil {
		return agent.Workload{}, nil, agent.Status(s.log.With("method", method, "spiffe_id", w.ID.String()), "subscribe", err)
	}
	return w, sub, nil
}

func checkTypeURL(req *discoveryv3.DiscoveryRequest) error {
	if t := req.GetTypeUrl(); t != "" && t != SecretTypeURL {
		return fmt.Errorf("%w: type_url %q is not %s", agent.ErrBadRequest, t, SecretTypeURL)
	}
	return nil
}
