package upstream

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func requireMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, fi.Mode().Perm(), path)
}

func TestSelfSignedGeneratesOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "root")
	s, err := NewSelfSigned(SelfSignedConfig{Dir: dir, TrustDomain: "example.org", Clock: fixedClock(t0)})
	require.NoError(t, err)

	requireMode(t, dir, 0o700)
	requireMode(t, filepath.Join(dir, SelfSignedKeyFile), 0o600)
	requireMode(t, filepath.Join(dir, SelfSignedCertFile), 0o644)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temp files left behind")

	roots, err := s.Bundle(context.Background())
	require.NoError(t, err)
	require.Len(t, roots, 1)
	root := roots[0]
	require.True(t, root.IsCA)
	require.True(t, root.BasicConstraintsValid)
	require.NotZero(t, root.KeyUsage&x509.KeyUsageCertSign)
	require.Equal(t, "Lanyard root example.org", root.Subject.CommonName)
	require.Equal(t, t0.Add(-IntermediateBackdate), root.NotBefore)
	require.Equal(t, t0.Add(10*365*24*time.Hour), root.NotAfter)
	require.NoError(t, root.CheckSignatureFrom(root))
	require.IsType(t, &ecdsa.PublicKey{}, root.PublicKey)
	certPEM, keyPEM := readFile(t, filepath.Join(dir, SelfSignedCertFile)), readFile(t, filepath.Join(dir, SelfSignedKeyFile))

	// A restart, a year later, loads the same root and key.
	s2, err := NewSelfSigned(SelfSignedConfig{Dir: dir, TrustDomain: "example.org", Clock: fixedClock(t0.Add(365 * 24 * time.Hour))})
	require.NoError(t, err)
	roots2, err := s2.Bundle(context.Background())
	require.NoError(t, err)
	require.True(t, root.Equal(roots2[0]))
	require.Equal(t, certPEM, readFile(t, filepath.Join(dir, SelfSignedCertFile)))
	require.Equal(t, keyPEM, readFile(t, filepath.Join(dir, SelfSignedKeyFile)))

	key := newKey(t)
	resp, err := s2.MintX509CA(context.Background(), MintRequest{CSR: newCSR(t, key), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, resp.CertChain[0].CheckSignatureFrom(root))
}

func TestSelfSignedKeyTypes(t *testing.T) {
	for _, tt := range []struct {
		name    string
		typ     string
		curve   string
		size    int
		want    crypto.PublicKey
		wantErr bool
	}{
		{name: "default", want: &ecdsa.PublicKey{}},
		{name: "P-384", typ: "EC", curve: "P-384", want: &ecdsa.PublicKey{}},
		{name: "RSA", typ: "RSA", size: 2048, want: &rsa.PublicKey{}},
		{name: "Ed25519", typ: "OKP", curve: "Ed25519", want: ed25519.PublicKey{}},
		{name: "unknown", typ: "DSA", wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := NewSelfSigned(SelfSignedConfig{Dir: dir, KeyType: tt.typ, Curve: tt.curve, Size: tt.size, Clock: fixedClock(t0)})
			if tt.wantErr {
				require.Error(t, err)
				_, statErr := os.Stat(filepath.Join(dir, SelfSignedKeyFile))
				require.ErrorIs(t, statErr, os.ErrNotExist)
				return
			}
			require.NoError(t, err)
			require.IsType(t, tt.want, s.cert.PublicKey)
			// It reloads and mints with that key.
			s, err = NewSelfSigned(SelfSignedConfig{Dir: dir, Clock: fixedClock(t0)})
			require.NoError(t, err)
			resp, err := s.MintX509CA(context.Background(), MintRequest{CSR: newCSR(t, newKey(t)), TTL: time.Hour})
			require.NoError(t, err)
			verifyResponse(t, resp, t0)
		})
	}
}

func TestSelfSignedMint(t *testing.T) {
	s, err := NewSelfSigned(SelfSignedConfig{Dir: t.TempDir(), TrustDomain: "example.org", TTL: 2 * time.Hour, Clock: fixedClock(t0)})
	require.NoError(t, err)
	key := newKey(t)
	resp, err := s.MintX509CA(context.Background(), MintRequest{
		CSR: newCSR(t, key), TTL: time.Hour, URISAN: "spiffe://example.org", CommonName: "Lanyard intermediate a",
	})
	require.NoError(t, err)
	require.Len(t, resp.CertChain, 1)
	require.Len(t, resp.Roots, 1)
	requireIntermediate(t, resp.CertChain[0], key.Public(), "spiffe://example.org", "Lanyard intermediate a")
	require.Equal(t, t0.Add(time.Hour), resp.CertChain[0].NotAfter)
	verifyResponse(t, resp, t0)

	// Never past the root's expiry.
	resp, err = s.MintX509CA(context.Background(), MintRequest{CSR: newCSR(t, key), TTL: 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, resp.Roots[0].NotAfter, resp.CertChain[0].NotAfter)
	require.Equal(t, t0.Add(2*time.Hour), resp.CertChain[0].NotAfter)
	verifyResponse(t, resp, t0)
}

func TestSelfSignedExpiredRoot(t *testing.T) {
	now := t0
	s, err := NewSelfSigned(SelfSignedConfig{Dir: t.TempDir(), TTL: time.Hour, Clock: func() time.Time { return now }})
	require.NoError(t, err)
	now = now.Add(2 * time.Hour)
	_, err = s.MintX509CA(context.Background(), MintRequest{CSR: newCSR(t, newKey(t)), TTL: time.Hour})
	require.ErrorContains(t, err, "expired")
}

func TestSelfSignedRefuses(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr string
	}{
		{
			name: "key of another root",
			setup: func(t *testing.T, dir string) {
				other := t.TempDir()
				_, err := NewSelfSigned(SelfSignedConfig{Dir: other})
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, SelfSignedKeyFile), readFile(t, filepath.Join(other, SelfSignedKeyFile)), 0o600))
			},
			wantErr: "does not match",
		},
		{
			// The root was published: losing its key must not silently
			// make a new root that no workload trusts.
			name:    "key missing",
			setup:   func(t *testing.T, dir string) { require.NoError(t, os.Remove(filepath.Join(dir, SelfSignedKeyFile))) },
			wantErr: SelfSignedKeyFile,
		},
		{
			name: "corrupt certificate",
			setup: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, SelfSignedCertFile), []byte("garbage"), 0o644))
			},
			wantErr: SelfSignedCertFile,
		},
		{
			name: "corrupt key",
			setup: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, SelfSignedKeyFile), []byte("garbage"), 0o600))
			},
			wantErr: SelfSignedKeyFile,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := NewSelfSigned(SelfSignedConfig{Dir: dir})
			require.NoError(t, err)
			tt.setup(t, dir)
			certBefore := readFile(t, filepath.Join(dir, SelfSignedCertFile))

			_, err = NewSelfSigned(SelfSignedConfig{Dir: dir})
			require.ErrorContains(t, err, tt.wantErr)
			require.Equal(t, certBefore, readFile(t, filepath.Join(dir, SelfSignedCertFile)), "root left as it was")
		})
	}
}

// A crash between writing the key and the certificate leaves a key and no
// certificate: the root was never published, so a new one is made.
func TestSelfSignedCertMissing(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSelfSigned(SelfSignedConfig{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, SelfSignedCertFile)))
	s2, err := NewSelfSigned(SelfSignedConfig{Dir: dir})
	require.NoError(t, err)
	require.False(t, s.cert.Equal(s2.cert))
	_, err = NewSelfSigned(SelfSignedConfig{Dir: dir})
	require.NoError(t, err)
}

func TestSelfSignedNoDir(t *testing.T) {
	_, err := NewSelfSigned(SelfSignedConfig{})
	require.ErrorContains(t, err, "dir is required")
}
