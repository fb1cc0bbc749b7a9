package agent

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/catest"
	"github.com/lanyard-id/lanyard/internal/clocktest"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// passTime moves clock forward by d one due timer at a time, letting the
// code under test (in the test's synctest bubble) run to a standstill after
// each step, so that a test sees every wake-up the code asked for.
func passTime(clock *clocktest.Clock, d time.Duration) {
	synctest.Wait()
	for d > 0 {
		next, ok := clock.Next()
		if !ok || next > d {
			clock.Advance(d)
			synctest.Wait()
			return
		}
		clock.Advance(next)
		d -= next
		synctest.Wait()
	}
}

// newTestCA is the shared test CA (ca/catest) for testTD.
func newTestCA(t testing.TB, clock func() time.Time, mod func(*ca.Config)) *catest.CA {
	t.Helper()
	return catest.New(t, catest.Options{TrustDomain: testTD, Clock: clock, Config: mod})
}

// fakeSigner is a Signer on the real issuing pipeline. Attested callers get
// their attested subject; token callers the subject of the token in the
// table (an unknown token is Unauthenticated, as at the real CA). It can
// fail the whole call or single entries, and counts calls.
type fakeSigner struct {
	ca     *catest.CA
	tokens map[string]ca.Subject // read-only after construction

	mu         sync.Mutex
	rpcCode    codes.Code
	entryCodes map[string]codes.Code // by "ns/sa", or "*" for every entry
	calls      []int                 // entries per call
	ids        [][]string            // SPIFFE IDs asked for, per call
}

func newFakeSigner(c *catest.CA, tokens map[string]ca.Subject) *fakeSigner {
	return &fakeSigner{ca: c, tokens: tokens, entryCodes: map[string]codes.Code{}}
}

// failRPC makes every call fail with code (codes.OK: succeed again).
func (f *fakeSigner) failRPC(code codes.Code) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rpcCode = code
}

// failEntries makes entries of service account "ns/sa" ("*": all) fail
// with code (codes.OK: succeed again).
func (f *fakeSigner) failEntries(sa string, code codes.Code) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if code == codes.OK {
		delete(f.entryCodes, sa)
		return
	}
	f.entryCodes[sa] = code
}

func (f *fakeSigner) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeSigner) callSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.calls...)
}

func (f *fakeSigner) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, len(reqs))
	rpc := f.rpcCode
	entries := maps.Clone(f.entryCodes)
	f.mu.Unlock()
	if rpc != codes.OK {
		return nil, status.Error(rpc, "fake CA: "+rpc.String())
	}
	results := make([]*cav1.SVIDResult, len(reqs))
	for i, r := range reqs {
		res := &cav1.SVIDResult{Id: r.GetId()}
		issued, err := f.signEntry(ctx, r, entries)
		if err != nil {
			st := statusOf(err)
			res.Code, res.Message = uint32(st.Code()), st.Message()
		} else {
			res.Svid = svidProtoOf(issued)
		}
		results[i] = res
	}
	return results, nil
}

func (f *fakeSigner) signEntry(ctx context.Context, r *cav1.SVIDRequest, entries map[string]codes.Code) (*ca.Issued, error) {
	var subj ca.Subject
	switch c := r.GetCaller().(type) {
	case *cav1.SVIDRequest_Token:
		s, ok := f.tokens[c.Token]
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "unknown token")
		}
		subj = s
	case *cav1.SVIDRequest_Attested:
		a := c.Attested
		subj = ca.Subject{Namespace: a.GetNamespace(), ServiceAccount: a.GetServiceAccount(), PodName: a.GetPodName(), PodUID: a.GetPodUid()}
	default:
		return nil, status.Error(codes.InvalidArgument, "no caller")
	}
	for _, k := range []string{subj.Namespace + "/" + subj.ServiceAccount, "*"} {
		if code, ok := entries[k]; ok {
			return nil, status.Error(code, "fake CA: "+code.String())
		}
	}
	return f.ca.CA.SignWorkload(ctx, ca.WorkloadRequest{
		Subject: subj, CSR: r.GetCsr(), TTL: r.GetTtl().AsDuration(), Caller: "fake-agent",
	})
}

// statusOf maps pipeline errors as ca/server does.
func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	switch {
	case errors.Is(err, ca.ErrInvalidCSR), errors.Is(err, ca.ErrInvalidRequest):
		return status.New(codes.InvalidArgument, err.Error())
	case errors.Is(err, ca.ErrPermissionDenied):
		return status.New(codes.PermissionDenied, err.Error())
	case errors.Is(err, ca.ErrNotReady):
		return status.New(codes.Unavailable, err.Error())
	default:
		return status.New(codes.Internal, err.Error())
	}
}

func svidProtoOf(i *ca.Issued) *cav1.X509SVID {
	p := &cav1.X509SVID{SpiffeId: i.ID.String(), ExpiresAt: timestamppb.New(i.Leaf().NotAfter)}
	for _, c := range i.Chain {
		p.CertChain = append(p.CertChain, c.Raw)
	}
	return p
}

func workloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(testTD, "ns", ns, "sa", sa)
}

func attestedWorkload(ns, sa string) Workload {
	return Workload{ID: workloadID(ns, sa), Attested: &Attested{Attestor: "unix", Namespace: ns, ServiceAccount: sa}}
}

func tokenWorkload(token, ns, sa string) Workload {
	return Workload{ID: workloadID(ns, sa), Token: token}
}

// startManager runs m until the test ends; stop ends it early (idempotent).
func startManager(t testing.TB, m *Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

// newTestManager builds a Manager on signer with the CA's bundle set, and
// runs it.
func newTestManager(t testing.TB, c *catest.CA, signer Signer, mod func(*ManagerConfig)) *Manager {
	t.Helper()
	cfg := ManagerConfig{Signer: signer, TrustDomain: testTD}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(cfg)
	require.NoError(t, err)
	m.SetBundle(c.Bundle())
	startManager(t, m)
	return m
}

// waitSVID waits for sub to hold an SVID other than not (by serial).
func waitSVID(t testing.TB, sub Subscription, not *x509svid.SVID, timeout time.Duration) *x509svid.SVID {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s, err := sub.SVID()
		require.NoError(t, err)
		if s != nil && (not == nil || s.Certificates[0].SerialNumber.Cmp(not.Certificates[0].SerialNumber) != 0) {
			return s
		}
		select {
		case <-sub.Updates():
		case <-deadline:
			t.Fatalf("no new SVID within %s", timeout)
		}
	}
}

// requireValidSVID checks s is id's SVID, its key is its leaf's, and its
// chain verifies against bundles.
func requireValidSVID(t testing.TB, s *x509svid.SVID, id spiffeid.ID, bundles x509bundle.Source, now time.Time) {
	t.Helper()
	require.Equal(t, id, s.ID)
	pub, ok := s.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	require.True(t, ok)
	require.True(t, pub.Equal(s.Certificates[0].PublicKey), "private key does not match the leaf")
	got, _, err := x509svid.Verify(s.Certificates, bundles, x509svid.WithTime(now))
	require.NoError(t, err)
	require.Equal(t, id, got)
}

func serialOf(s *x509svid.SVID) string { return s.Certificates[0].SerialNumber.Text(16) }

// logBuffer captures log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// entryOf returns a copy of the manager's state for the entry of w.
func entryOf(m *Manager, w Workload) (entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[entryKey(w)]
	if !ok {
		return entry{}, false
	}
	return *e, true
}
