//go:build vault

package vault

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/integration/harness"
	"github.com/lanyard-id/lanyard/storage"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// signPolicy is the least-privilege policy of docs/vault.md for the mount
// "pki": sign intermediates with its default issuer. Renewing and looking
// up its own token come with Vault's default policy.
const signPolicy = `path "pki/root/sign-intermediate" {
  capabilities = ["update"]
}
`

// recorder keeps issued records in memory (the store is not under test).
type recorder struct {
	mu   sync.Mutex
	recs []storage.CertificateRecord
}

func (r *recorder) Record(_ context.Context, rec storage.CertificateRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}

// replica is an in-process CA replica on an upstream: its Authority runs
// (renewing at half-life) until the test ends.
type replica struct {
	auth   *ca.Authority
	issuer *ca.CA

	mu        sync.Mutex
	rotations []*ca.X509CA
}

// runner is an upstream with a long-lived part (Vault's login keeper).
type runner interface {
	Run(ctx context.Context) error
}

func startReplica(t *testing.T, up upstream.Authority, ttl time.Duration) *replica {
	t.Helper()
	r := &replica{}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := ca.NewAuthority(ca.AuthorityConfig{
		TrustDomain: td, Upstream: up, TTL: ttl, Name: t.Name(), Logger: log.With("component", "authority"),
		OnRotate: func(x *ca.X509CA) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rotations = append(r.rotations, x)
		},
	})
	require.NoError(t, err)
	r.auth = a
	r.issuer, err = ca.New(ca.Config{TrustDomain: td, Keys: a, Recorder: &recorder{}, Logger: log.With("component", "ca")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, a.Prepare(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx) })
	if rn, ok := up.(runner); ok {
		wg.Go(func() { _ = rn.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return r
}

func (r *replica) rotationCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rotations)
}

func (r *replica) current(t *testing.T) *ca.X509CA {
	t.Helper()
	x, err := r.auth.Current()
	require.NoError(t, err)
	return x
}

// issue signs a workload SVID and verifies it with go-spiffe against a
// bundle holding only roots.
func (r *replica) issue(t *testing.T, roots ...*x509.Certificate) *x509svid.SVID {
	t.Helper()
	csr := harness.NewCSR(t, harness.CSROptions{Key: harness.P256})
	key := csr.Key
	iss, err := r.issuer.SignWorkload(context.Background(), ca.WorkloadRequest{
		Subject: ca.Subject{Cluster: "c", Namespace: "default", ServiceAccount: "web"}, CSR: csr.DER, Caller: "test",
	})
	require.NoError(t, err)
	svid := &x509svid.SVID{ID: iss.ID, Certificates: iss.Chain, PrivateKey: key}
	id, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, roots))
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/ns/default/sa/web", id.String())
	return svid
}

// eventually polls cond every 100 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
