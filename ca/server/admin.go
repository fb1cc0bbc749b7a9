package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/ca"
	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// adminPrefix starts the full method name of every admin call.
var adminPrefix = "/" + adminv1.AdminService_ServiceDesc.ServiceName + "/"

// AdminConfig turns on the admin API (proto/lanyard/admin/v1).
type AdminConfig struct {
	// Socket, when set, serves the admin API on this Unix socket listener
	// (agent.ListenSocket makes one, mode 0600 by default). Callers are
	// identified by their uid (SO_PEERCRED) and must be in AllowedUIDs.
	Socket net.Listener
	// AllowedUIDs may call the API on the socket (default: the CA
	// process's own uid, and root).
	AllowedUIDs []uint32
	// AdminIDs may call the API on the CA's TLS port with an X.509-SVID of
	// the trust domain carrying one of these SPIFFE IDs.
	AdminIDs []spiffeid.ID
	// Audit queues audit events of reads and refused calls
	// (*storage.Writer); changes are written to the store synchronously,
	// before they take effect.
	Audit AuditRecorder
	// StoreType is reported by GetStatus ("sqlite", "postgres").
	StoreType string
	// Verifiers reports the token verifiers per cluster, for GetStatus.
	Verifiers func() []VerifierStatus
	// ReplicaName names this replica in GetStatus (default the hostname).
	ReplicaName string
	// AuditPoll is how often WatchAudit reads new events (default 500ms).
	AuditPoll time.Duration
	// SummaryInterval is how often issuance and rejection counts are
	// written to the audit log (default 1m; negative turns it off).
	SummaryInterval time.Duration
	// HeartbeatInterval is how often this replica writes its health and
	// intermediate to the store for GetStatus (default 5s); a replica not
	// heard from for three intervals is shown "stale".
	HeartbeatInterval time.Duration
}

// AuditRecorder queues an audit event (*storage.Writer).
type AuditRecorder interface {
	RecordAudit(ctx context.Context, ev storage.AuditEvent) error
}

// VerifierStatus describes one cluster's token verifier.
type VerifierStatus struct {
	Cluster      string
	Method       string
	LastKeyFetch time.Time
	Requests     uint64
	CacheHits    uint64
	Calls        uint64
}

// adminService implements adminv1.AdminServiceServer.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	cfg       AdminConfig
	srv       *Server
	store     storage.Store
	authority Bundler
	controls  *ca.Controls
	banned    *bannedCache
	log       *slog.Logger
	clock     func() time.Time
	started   time.Time
}

func newAdminService(cfg AdminConfig, s *Server, banned *bannedCache) (*adminService, error) {
	if s.cfg.Controls == nil {
		return nil, errors.New("server: the admin API needs Controls")
	}
	if len(cfg.AllowedUIDs) == 0 {
		cfg.AllowedUIDs = []uint32{uint32(os.Getuid()), 0}
	}
	if cfg.AuditPoll <= 0 {
		cfg.AuditPoll = 500 * time.Millisecond
	}
	if cfg.SummaryInterval == 0 {
		cfg.SummaryInterval = time.Minute
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.ReplicaName == "" {
		cfg.ReplicaName, _ = os.Hostname()
	}
	if cfg.Audit == nil {
		cfg.Audit = syncAudit{s.cfg.Store}
	}
	for _, id := range cfg.AdminIDs {
		if id.TrustDomain() != s.cfg.CA.TrustDomain() {
			return nil, fmt.Errorf("server: admin ID %s is not in trust domain %s", id, s.cfg.CA.TrustDomain())
		}
	}
	return &adminService{
		cfg: cfg, srv: s, store: s.cfg.Store, authority: s.cfg.Authority, controls: s.cfg.Controls,
		banned: banned, log: s.cfg.Logger.With("api", "admin"), clock: s.cfg.Clock, started: s.cfg.Clock(),
	}, nil
}

// syncAudit writes events straight to the store when no writer is given.
type syncAudit struct{ store storage.Store }

func (a syncAudit) RecordAudit(ctx context.Context, ev storage.AuditEvent) error {
	return a.store.AppendAudit(ctx, []storage.AuditEvent{ev})
}

type actorKey struct{}

// actorFrom is who is calling, as authenticate found it.
func actorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// authenticate says who the caller of an admin method is: "uid:<n>" on the
// Unix socket, the SPIFFE ID of the client certificate on the TLS port. A
// caller that is not an admin gets ca.ErrPermissionDenied, one without
// credentials ErrNoClientCert; actor is set in both cases for the audit.
func (a *adminService) authenticate(ctx context.Context) (actor string, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "anonymous", ErrNoClientCert
	}
	switch info := p.AuthInfo.(type) {
	case attest.AuthInfo:
		actor = fmt.Sprintf("uid:%d", info.Peer.UID)
		if !slices.Contains(a.cfg.AllowedUIDs, info.Peer.UID) {
			return actor, fmt.Errorf("%w: uid %d may not use the admin socket", ca.ErrPermissionDenied, info.Peer.UID)
		}
		return actor, nil
	case credentials.TLSInfo:
		if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
			return "anonymous", fmt.Errorf("%w: call the admin API with an admin SVID", ErrNoClientCert)
		}
		leaf := info.State.VerifiedChains[0][0]
		if len(leaf.URIs) != 1 {
			return "anonymous", fmt.Errorf("%w: client certificate has no SPIFFE ID", ErrNoClientCert)
		}
		id, err := spiffeid.FromURI(leaf.URIs[0])
		if err != nil {
			return "anonymous", fmt.Errorf("%w: client certificate has no SPIFFE ID", ErrNoClientCert)
		}
		if !slices.Contains(a.cfg.AdminIDs, id) {
			return id.String(), fmt.Errorf("%w: %s is not an admin", ca.ErrPermissionDenied, id)
		}
		return id.String(), nil
	default:
		return "anonymous", ErrNoClientCert
	}
}

// refused audits a refused admin call and returns its status error.
func (a *adminService) refused(ctx context.Context, method, actor string, err error) error {
	st := toStatus(err)
	a.audit(ctx, storage.AuditEvent{Actor: actor, Action: "admin.refused", Subject: strings.TrimPrefix(method, adminPrefix),
		Outcome: st.Code().String(), Detail: st.Message()})
	a.log.Warn("admin call refused", "method", method, "actor", actor, "code", st.Code().String(), "reason", err.Error())
	return st.Err()
}

// audit queues ev (time set now); a failure is logged.
func (a *adminService) audit(ctx context.Context, ev storage.AuditEvent) {
	ev.Time = a.clock()
	if err := a.cfg.Audit.RecordAudit(context.WithoutCancel(ctx), ev); err != nil {
		a.log.Error("audit admin call", "action", ev.Action, "error", err)
	}
}

// unaryAuth authenticates admin calls; other services pass through.
func (a *adminService) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, adminPrefix) {
		return handler(ctx, req)
	}
	actor, err := a.authenticate(ctx)
	if err != nil {
		return nil, a.refused(ctx, info.FullMethod, actor, err)
	}
	ctx = context.WithValue(ctx, actorKey{}, actor)
	resp, err := handler(ctx, req)
	if err != nil {
		err = statusErr(a.log, info.FullMethod, err)
	}
	return resp, err
}

// streamAuth is unaryAuth for streams.
func (a *adminService) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, adminPrefix) {
		return handler(srv, ss)
	}
	actor, err := a.authenticate(ss.Context())
	if err != nil {
		return a.refused(ss.Context(), info.FullMethod, actor, err)
	}
	err = handler(srv, &actorStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), actorKey{}, actor)})
	if err != nil {
		err = statusErr(a.log, info.FullMethod, err)
	}
	return err
}

type actorStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *actorStream) Context() context.Context { return s.ctx }

// change runs an admin change: an audit event with outcome "requested" is
// written to the store first (no change without it), then the change,
// then an event with its outcome.
func (a *adminService) change(ctx context.Context, action, subject, detail string, do func() error) error {
	actor := actorFrom(ctx)
	before := storage.AuditEvent{Time: a.clock(), Actor: actor, Action: action, Subject: subject, Outcome: "requested", Detail: detail}
	if err := a.store.AppendAudit(ctx, []storage.AuditEvent{before}); err != nil {
		return fmt.Errorf("audit %s before it takes effect: %w", action, err)
	}
	err := do()
	after := before
	after.Time, after.Outcome = a.clock(), toStatus(err).Code().String()
	if err == nil {
		after.Outcome = "ok"
	}
	if aerr := a.store.AppendAudit(context.WithoutCancel(ctx), []storage.AuditEvent{after}); aerr != nil {
		a.log.Error("audit admin change outcome", "action", action, "error", aerr)
	}
	if err != nil {
		return err
	}
	// Enforce here at once; other replicas within their poll.
	if rerr := a.controls.Reload(ctx); rerr != nil {
		a.log.Warn("reload controls after change", "action", action, "error", rerr)
	}
	return nil
}

// read audits a read-only admin call (queued, not waited for).
func (a *adminService) read(ctx context.Context, action, subject string) {
	a.audit(ctx, storage.AuditEvent{Actor: actorFrom(ctx), Action: action, Subject: subject, Outcome: "ok"})
}

// runSummary writes issuance and rejection summaries to the audit log
// every SummaryInterval, until ctx ends.
func (a *adminService) runSummary(ctx context.Context) error {
	if a.cfg.SummaryInterval < 0 {
		return nil
	}
	s := &auditSummary{metrics: a.srv.metrics, audit: a.cfg.Audit, interval: a.cfg.SummaryInterval, clock: a.clock}
	return s.run(ctx)
}

// runHeartbeat writes this replica's health and intermediate to the store
// every HeartbeatInterval, until ctx ends.
func (a *adminService) runHeartbeat(ctx context.Context) error {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		r := storage.ReplicaRecord{Name: a.cfg.ReplicaName, StartedAt: a.started, SeenAt: a.clock(), Health: "serving"}
		if err := a.srv.Ready(ctx); err != nil {
			r.Health = "not ready: " + err.Error()
		}
		if x, err := a.srv.cfg.Authority.Current(); err == nil {
			r.IntermediateKeyID, r.IntermediateNotAfter = x.KeyID, x.Certificate.NotAfter
		}
		if err := a.store.UpsertReplica(ctx, r); err != nil && ctx.Err() == nil {
			a.log.Warn("write replica heartbeat", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
