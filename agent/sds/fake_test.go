package sds

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
)

var (
	tdLocal = spiffeid.RequireTrustDomainFromString("cluster.local")
	tdFed   = spiffeid.RequireTrustDomainFromString("example.org")
	alice   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/alice")
	bob     = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bob")
	carol   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/carol")
)

// testCA issues SVIDs for one trust domain.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t *testing.T, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: td.Name() + " root"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{td: td, cert: cert, key: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

func (ca *testCA) issue(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		URIs:         []*url.URL{id.URL()},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// fakeIdentities is agent.Identities whose SVIDs and bundles a test sets.
type fakeIdentities struct {
	mu       sync.Mutex
	svids    map[spiffeid.ID]*x509svid.SVID
	svidErr  map[spiffeid.ID]error // what SVID() reports (ErrDenied)
	subErr   map[spiffeid.ID]error // what Subscribe reports
	bundles  *x509bundle.Set
	subs     map[*fakeSub]struct{}
	subCount map[spiffeid.ID]int // Subscribe calls
}

func newFakeIdentities() *fakeIdentities {
	return &fakeIdentities{
		svids:    map[spiffeid.ID]*x509svid.SVID{},
		svidErr:  map[spiffeid.ID]error{},
		subErr:   map[spiffeid.ID]error{},
		subs:     map[*fakeSub]struct{}{},
		subCount: map[spiffeid.ID]int{},
	}
}

func (f *fakeIdentities) Subscribe(_ context.Context, w agent.Workload) (agent.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subCount[w.ID]++
	if err := f.subErr[w.ID]; err != nil {
		return nil, err
	}
	s := &fakeSub{f: f, id: w.ID, ch: make(chan struct{}, 1)}
	f.subs[s] = struct{}{}
	s.ch <- struct{}{}
	return s, nil
}

// setSVID rotates id's SVID (nil: pending) and wakes its subscribers.
func (f *fakeIdentities) setSVID(id spiffeid.ID, svid *x509svid.SVID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svids[id] = svid
	f.notifyLocked(func(s *fakeSub) bool { return s.id == id })
}

func (f *fakeIdentities) deny(id spiffeid.ID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svidErr[id] = err
	f.notifyLocked(func(s *fakeSub) bool { return s.id == id })
}

// refuse makes Subscribe for id fail with err.
func (f *fakeIdentities) refuse(id spiffeid.ID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subErr[id] = err
}

func (f *fakeIdentities) setBundles(bundles ...*x509bundle.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundles = x509bundle.NewSet(bundles...)
	f.notifyLocked(func(*fakeSub) bool { return true })
}

// poke wakes every subscriber without changing anything.
func (f *fakeIdentities) poke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked(func(*fakeSub) bool { return true })
}

func (f *fakeIdentities) notifyLocked(match func(*fakeSub) bool) {
	for s := range f.subs {
		if match(s) {
			select {
			case s.ch <- struct{}{}:
			default:
			}
		}
	}
}

func (f *fakeIdentities) live() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeIdentities) subscribed(id spiffeid.ID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subCount[id]
}

type fakeSub struct {
	f  *fakeIdentities
	id spiffeid.ID
	ch chan struct{}
}

func (s *fakeSub) Updates() <-chan struct{} { return s.ch }

func (s *fakeSub) SVID() (*x509svid.SVID, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if err := s.f.svidErr[s.id]; err != nil {
		return nil, err
	}
	return s.f.svids[s.id], nil
}

func (s *fakeSub) Bundles() *x509bundle.Set {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return s.f.bundles
}

func (s *fakeSub) Close() {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	delete(s.f.subs, s)
}

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
	ca, fed *testCA
	ids     *fakeIdentities
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
		ca:   newCA(t, tdLocal),
		fed:  newCA(t, tdFed),
		ids:  newFakeIdentities(),
		logs: &logRecorder{},
		metrics: &Metrics{
			Streams:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"}),
			Pushes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pushes"}),
			NACKs:       prometheus.NewCounter(prometheus.CounterOpts{Name: "nacks"}),
			SVIDsServed: prometheus.NewCounter(prometheus.CounterOpts{Name: "served"}),
		},
		path: filepath.Join(t.TempDir(), "s.sock"),
	}
	h.ids.setBundles(h.ca.bundle(), h.fed.bundle())
	h.ids.setSVID(alice, h.ca.issue(t, alice))
	h.ids.setSVID(bob, h.ca.issue(t, bob))
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
