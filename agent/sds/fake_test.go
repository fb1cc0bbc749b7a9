package sds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/agenttest"
	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
	"github.com/lanyard-id/lanyard/ca/catest"
)

var (
	tdLocal = spiffeid.RequireTrustDomainFromString("cluster.local")
	tdFed   = spiffeid.RequireTrustDomainFromString("example.org")
	alice   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/alice")
	bob     = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bob")
	carol   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/carol")
)

// tokenIdentifier identifies callers by their bearer token, as
// agent/attest does first; no token is ErrNotIdentified.
type tokenIdentifier map[string]spiffeid.ID

func (ti tokenIdentifier) Identify(ctx context.Context) (agent.Workload, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		token, ok := strings.CutPrefix(v, "Bearer ")
		if id, known := ti[token]; ok && known {
			return agent.Workload{ID: id, Token: token}, nil
		}
	}
	return agent.Workload{}, fmt.Errorf("no token, no attestation: %w", agent.ErrNotIdentified)
}

// logRecorder keeps every log record.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, b.String())
	return nil
}

// count is how many records start with msg and contain every part.
func (l *logRecorder) count(msg string, parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, r := range l.records {
		if !strings.HasPrefix(r, msg) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		n++
	}
	return n
}

// harness is an SDS server on a Unix socket with fake identities.
type harness struct {
	t       *testing.T
	ca, fed *catest.CA
	ids     *agenttest.Identities
	logs    *logRecorder
	metrics *Metrics
	server  *Server
	path    string
	srv     *grpc.Server
	conn    *grpc.ClientConn
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{
		t:    t,
		ca:   catest.New(t, catest.Options{TrustDomain: tdLocal}),
		fed:  catest.New(t, catest.Options{TrustDomain: tdFed}),
		ids:  agenttest.New(nil),
		logs: &logRecorder{},
		metrics: &Metrics{
			Streams:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"}),
			Pushes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pushes"}),
			NACKs:       prometheus.NewCounter(prometheus.CounterOpts{Name: "nacks"}),
			SVIDsServed: prometheus.NewCounter(prometheus.CounterOpts{Name: "served"}),
		},
		path: filepath.Join(t.TempDir(), "s.sock"),
	}
	h.ids.SetBundles(h.ca.Bundle(), h.fed.Bundle())
	h.ids.SetSVID(alice, h.ca.Issue(t, alice))
	h.ids.SetSVID(bob, h.ca.Issue(t, bob))
	cfg.Identifier = tokenIdentifier{"alice-token": alice, "bob-token": bob, "carol-token": carol}
	cfg.Identities = h.ids
	cfg.Log = slog.New(h.logs)
	cfg.Metrics = h.metrics
	var err error
	h.server, err = New(cfg)
	require.NoError(t, err)
	h.start()
	h.conn, err = sdstest.Dial(h.path)
	require.NoError(t, err)
	t.Cleanup(func() {
		h.conn.Close()
		h.stop()
	})
	return h
}

// start serves on the socket (again, after stop).
func (h *harness) start() {
	l, err := net.Listen("unix", h.path)
	require.NoError(h.t, err)
	h.srv = grpc.NewServer()
	h.server.Register(h.srv)
	go h.srv.Serve(l) //nolint:errcheck // ends with Stop
}

func (h *harness) stop() {
	if h.srv != nil {
		h.srv.Stop()
		h.srv = nil
	}
}

// client starts an SDS client, closed at the end of the test.
func (h *harness) client(cfg sdstest.Config) *sdstest.Client {
	c := sdstest.Start(context.Background(), h.conn, cfg)
	h.t.Cleanup(c.Close)
	return c
}
