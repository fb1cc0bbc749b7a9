package workloadapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/agent"
)

// testCA is a root that signs SVIDs directly.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t require.TestingT, td string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tdID := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"lanyard test"}, CommonName: td + " root"},
		URIs:                  []*url.URL{tdID.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{td: tdID, cert: cert, key: key}
}

func (c *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert})
}

// svid issues an X.509-SVID for id with a fresh key; serial tells
// rotations apart.
func (c *testCA) svid(t require.TestingT, id spiffeid.ID, serial int64) *x509svid.SVID {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		URIs:         []*url.URL{id.URL()},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// panicT is a require.TestingT for examples, which have no *testing.T.
type panicT struct{}

func (panicT) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (panicT) FailNow()                          { panic("failed") }

// sameKey reports whether two private keys are the same key.
func sameKey(a, b crypto.Signer) bool {
	return a.(interface{ Equal(crypto.PrivateKey) bool }).Equal(b)
}

// fakeIdentity is one workload's state in fakeIdentities; every
// subscription to it sees changes.
type fakeIdentity struct {
	mu        sync.Mutex
	svid      *x509svid.SVID
	err       error
	bundles   *x509bundle.Set
	subs      map[*fakeSub]struct{}
	svidCalls chan struct{} // gets a value (if room) on every SVID call
}

func newIdentity(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *fakeIdentity {
	return &fakeIdentity{svid: svid, bundles: x509bundle.NewSet(bundles...), subs: map[*fakeSub]struct{}{}, svidCalls: make(chan struct{}, 1)}
}

// set changes the state and notifies every subscription.
func (f *fakeIdentity) set(svid *x509svid.SVID, err error, bundles ...*x509bundle.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svid, f.err = svid, err
	if bundles != nil {
		f.bundles = x509bundle.NewSet(bundles...)
	}
	f.notifyLocked()
}

func (f *fakeIdentity) notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked()
}

func (f *fakeIdentity) notifyLocked() {
	for s := range f.subs {
		select {
		case s.updates <- struct{}{}:
		default:
		}
	}
}

// shutdown closes every subscription's channel, as a stopping agent may.
func (f *fakeIdentity) shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		close(s.updates)
		delete(f.subs, s)
	}
}

func (f *fakeIdentity) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

type fakeSub struct {
	id      *fakeIdentity
	updates chan struct{}
}

func (s *fakeSub) Updates() <-chan struct{} { return s.updates }

func (s *fakeSub) SVID() (*x509svid.SVID, error) {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	select {
	case s.id.svidCalls <- struct{}{}:
	default:
	}
	return s.id.svid, s.id.err
}

func (s *fakeSub) Bundles() *x509bundle.Set {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	return s.id.bundles
}

func (s *fakeSub) Close() {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	delete(s.id.subs, s)
}

// fakeIdentities hands out subscriptions by workload SPIFFE ID, as the
// agent's manager does, and records who subscribed.
type fakeIdentities struct {
	mu         sync.Mutex
	byID       map[spiffeid.ID]*fakeIdentity
	subscribed []agent.Workload
}

func newIdentities(ids map[spiffeid.ID]*fakeIdentity) *fakeIdentities {
	return &fakeIdentities{byID: ids}
}

func (f *fakeIdentities) Subscribe(_ context.Context, w agent.Workload) (agent.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subscribed = append(f.subscribed, w)
	id, ok := f.byID[w.ID]
	if !ok {
		return nil, context.DeadlineExceeded // any error the test does not expect
	}
	s := &fakeSub{id: id, updates: make(chan struct{}, 1)}
	id.mu.Lock()
	id.subs[s] = struct{}{}
	id.mu.Unlock()
	return s, nil
}

func (f *fakeIdentities) workloads() []agent.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agent.Workload(nil), f.subscribed...)
}

// fakeMetric is a Gauge and a Counter.
type fakeMetric struct{ n atomic.Int64 }

func (m *fakeMetric) Inc() { m.n.Add(1) }
func (m *fakeMetric) Dec() { m.n.Add(-1) }
