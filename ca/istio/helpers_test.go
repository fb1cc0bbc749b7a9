package istio

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca"
)

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// fakeBundler is a settable trust bundle.
type fakeBundler struct {
	mu      sync.Mutex
	b       *ca.Bundle
	changed chan struct{}
}

func newFakeBundler(roots ...*x509.Certificate) *fakeBundler {
	return &fakeBundler{b: &ca.Bundle{TrustDomain: testTD, Roots: roots, Sequence: 1}, changed: make(chan struct{})}
}

func (f *fakeBundler) Bundle() *ca.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.b
}

func (f *fakeBundler) BundleChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeBundler) set(roots ...*x509.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.b = &ca.Bundle{TrustDomain: testTD, Roots: roots, Sequence: f.b.Sequence + 1}
	close(f.changed)
	f.changed = make(chan struct{})
}

// selfSigned is a throwaway root certificate.
func selfSigned(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}
