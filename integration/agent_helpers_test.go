package integration

import (
	"context"
	"crypto"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
)

// Resource names of the agent's SDS server.
const (
	sdsDefault = "default"
	sdsRootCA  = "ROOTCA"
)

// serial is a certificate's serial as the store writes it.
func serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// workloadClient is the official go-spiffe Workload API client on the
// agent socket at path, closed when the test ends.
func workloadClient(t *testing.T, path string) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(t.Context(), workloadapi.WithAddr("unix://"+path))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// fetchX509 fetches the caller's X.509 context within timeout.
func fetchX509(t *testing.T, c *workloadapi.Client, timeout time.Duration) *workloadapi.X509Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	x, err := c.FetchX509Context(ctx)
	require.NoError(t, err, "FetchX509Context")
	return x
}

// requireSVID checks an SVID an agent served: one SVID, not expired, with
// its private key, verifying with go-spiffe against bundle to want.
func requireSVID(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle, want spiffeid.ID) {
	t.Helper()
	require.NotNil(t, svid)
	require.Equal(t, want, svid.ID)
	requireVerifies(t, svid.Certificates, bundle, want)
	leaf := svid.Certificates[0]
	now := time.Now()
	require.True(t, now.Before(leaf.NotAfter), "SVID %s expired at %s", serial(leaf), leaf.NotAfter)
	require.False(t, leaf.IsCA)
	pub, ok := svid.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	require.True(t, ok)
	require.True(t, pub.Equal(leaf.PublicKey), "private key does not match the leaf")
}

// requireX509Context checks a Workload API X.509 context: exactly one
// SVID for want (verified against bundle, which must also equal the
// context's bundle of its trust domain) and no other trust domain.
func requireX509Context(t *testing.T, x *workloadapi.X509Context, bundle *x509bundle.Bundle, want spiffeid.ID) *x509svid.SVID {
	t.Helper()
	require.Len(t, x.SVIDs, 1)
	requireSVID(t, x.DefaultSVID(), bundle, want)
	got, err := x.Bundles.GetX509BundleForTrustDomain(want.TrustDomain())
	require.NoError(t, err)
	require.True(t, got.Equal(bundle), "Workload API bundle differs from bundle.pem")
	require.Equal(t, 1, x.Bundles.Len())
	return x.DefaultSVID()
}

// x509Update is one update a watcher saw.
type x509Update struct {
	at      time.Time
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

// x509Watch runs WatchX509Context with the go-spiffe client and records
// every update; it stops when the test ends.
type x509Watch struct {
	mu      sync.Mutex
	updates []x509Update
	errs    []error
	changed chan struct{}
}

func (w *x509Watch) OnX509ContextUpdate(x *workloadapi.X509Context) {
	w.mu.Lock()
	w.updates = append(w.updates, x509Update{at: time.Now(), svid: x.DefaultSVID(), bundles: x.Bundles})
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *x509Watch) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

func watchX509(t *testing.T, c *workloadapi.Client) *x509Watch {
	t.Helper()
	w := &x509Watch{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.WatchX509Context(ctx, w)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

func (w *x509Watch) snapshot() []x509Update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]x509Update(nil), w.updates...)
}

// waitFor waits until an update satisfies ok, and returns the first such.
func (w *x509Watch) waitFor(t *testing.T, timeout time.Duration, what string, ok func(x509Update) bool) x509Update {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		for _, u := range w.snapshot() {
			if ok(u) {
				return u
			}
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			w.mu.Lock()
			errs := w.errs
			w.mu.Unlock()
			t.Fatalf("Workload API watch: no %s within %s (%d updates, watch errors: %v)", what, timeout, len(w.snapshot()), errs)
		}
	}
}

// seen returns when the watcher first saw the SVID with serial s.
func (w *x509Watch) seen(s string) (time.Time, bool) {
	for _, u := range w.snapshot() {
		if u.svid != nil && serial(u.svid.Certificates[0]) == s {
			return u.at, true
		}
	}
	return time.Time{}, false
}

// dialSocket dials an agent socket for SDS or raw Workload API calls.
func dialSocket(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := sdstest.Dial(path)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startSDS starts an Envoy-like SDS client on conn, closed when the test ends.
func startSDS(t *testing.T, conn *grpc.ClientConn, cfg sdstest.Config) *sdstest.Client {
	t.Helper()
	c := sdstest.Start(context.Background(), conn, cfg)
	t.Cleanup(c.Close)
	return c
}

// sdsResponse is a response with the time the client saw it.
type sdsResponse struct {
	*sdstest.Response
	at time.Time
}

// nextSDS waits for the client's next response.
func nextSDS(t *testing.T, c *sdstest.Client, timeout time.Duration) sdsResponse {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r, ok := <-c.Responses():
		require.True(t, ok, "SDS client stopped: %v", c.Err())
		return sdsResponse{Response: r, at: time.Now()}
	case <-timer.C:
		t.Fatalf("no SDS response within %s (streams %d, last error %v)", timeout, c.Streams(), c.Err())
		return sdsResponse{}
	}
}

// nextFullSDS waits for a response that carries exactly the names want,
// within timeout. Responses before it may carry part of them (a first SVID
// still being fetched is left out, never sent empty): each must be a
// subset, and accepted by the client.
func nextFullSDS(t *testing.T, c *sdstest.Client, timeout time.Duration, want ...string) sdsResponse {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := nextSDS(t, c, time.Until(deadline))
		require.NoError(t, r.NACK, "the client rejected a response")
		names := r.Names()
		require.Subset(t, want, names, "names served")
		if len(names) == len(want) {
			return r
		}
		t.Logf("partial SDS response %v (version %s); waiting for %v", names, r.Version, want)
	}
}

// requireNoSDS checks that no response arrives for d.
func requireNoSDS(t *testing.T, c *sdstest.Client, d time.Duration, why string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r, ok := <-c.Responses():
		if !ok {
			t.Fatalf("SDS client stopped (%s): %v", why, c.Err())
		}
		t.Fatalf("unexpected SDS response (%s): version %s, names %v", why, r.Version, r.Names())
	case <-timer.C:
	}
}

// sdsSVID decodes the TlsCertificate name of r as an SVID and checks it
// against bundle.
func sdsSVID(t *testing.T, r *sdstest.Response, name string, bundle *x509bundle.Bundle, want spiffeid.ID) *x509svid.SVID {
	t.Helper()
	s := r.Secret(name)
	require.NotNil(t, s, "no secret %q in the response (names %v)", name, r.Names())
	tc := s.GetTlsCertificate()
	require.NotNil(t, tc, "secret %q is not a TlsCertificate", name)
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	require.NoError(t, err, "secret %q", name)
	requireSVID(t, svid, bundle, want)
	return svid
}

// sdsRoots decodes the ROOTCA validation context of r and checks it holds
// exactly bundle's roots.
func sdsRoots(t *testing.T, r *sdstest.Response, bundle *x509bundle.Bundle) {
	t.Helper()
	s := r.Secret(sdsRootCA)
	require.NotNil(t, s, "no %s in the response (names %v)", sdsRootCA, r.Names())
	vc := s.GetValidationContext()
	require.NotNil(t, vc, "%s is not a validation context", sdsRootCA)
	got, err := x509bundle.Parse(bundle.TrustDomain(), vc.GetTrustedCa().GetInlineBytes())
	require.NoError(t, err)
	require.True(t, got.Equal(bundle), "%s differs from bundle.pem", sdsRootCA)
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
