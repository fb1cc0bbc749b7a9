package upstream

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is the fake "now": whole seconds, as X.509 times are.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func newCSR(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	require.NoError(t, err)
	return der
}

type caSpec struct {
	cn         string
	isCA       bool
	keyUsage   x509.KeyUsage
	pathLen    int // -1: none
	notBefore  time.Time
	notAfter   time.Time
	parent     *x509.Certificate // nil: self-signed
	parentKey  crypto.Signer
	noBasicCon bool
}

// makeCert creates a certificate like an operator's tooling would.
func makeCert(t *testing.T, s caSpec) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	serial, err := RandomSerial()
	require.NoError(t, err)
	if s.notBefore.IsZero() {
		s.notBefore = t0.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = t0.Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              s.keyUsage,
		BasicConstraintsValid: !s.noBasicCon,
		IsCA:                  s.isCA,
		MaxPathLen:            s.pathLen,
		MaxPathLenZero:        s.pathLen == 0,
	}
	parent, parentKey := tmpl, crypto.Signer(key)
	if s.parent != nil {
		parent, parentKey = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func rootSpec(cn string) caSpec {
	return caSpec{cn: cn, isCA: true, keyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, pathLen: -1}
}

func intermediateSpec(cn string, parent *x509.Certificate, parentKey crypto.Signer) caSpec {
	s := rootSpec(cn)
	s.parent, s.parentKey = parent, parentKey
	return s
}

func writeCerts(t *testing.T, path string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path
}

// writeSEC1Key writes an EC key in the "EC PRIVATE KEY" form openssl uses.
func writeSEC1Key(t *testing.T, path string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600))
	return path
}

// requireIntermediate checks what every upstream must mint.
func requireIntermediate(t *testing.T, cert *x509.Certificate, pub crypto.PublicKey, uri, cn string) {
	t.Helper()
	require.True(t, cert.IsCA)
	require.True(t, cert.BasicConstraintsValid)
	require.Zero(t, cert.MaxPathLen)
	require.True(t, cert.MaxPathLenZero)
	require.NotZero(t, cert.KeyUsage&x509.KeyUsageCertSign)
	require.NotEmpty(t, cert.SubjectKeyId)
	require.True(t, pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey))
	require.Equal(t, cn, cert.Subject.CommonName)
	if uri == "" {
		require.Empty(t, cert.URIs)
	} else {
		require.Len(t, cert.URIs, 1)
		require.Equal(t, uri, cert.URIs[0].String())
	}
}

// verifyResponse checks the minted chain reaches the returned roots and
// that the roots are not in the chain.
func verifyResponse(t *testing.T, resp *MintResponse, now time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	for _, r := range resp.Roots {
		roots.AddCert(r)
		for _, c := range resp.CertChain {
			require.False(t, c.Equal(r), "root %s in the chain", r.Subject)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range resp.CertChain[1:] {
		inter.AddCert(c)
	}
	_, err := resp.CertChain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	require.NoError(t, err)
}

func TestRandomSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n, err := RandomSerial()
		require.NoError(t, err)
		require.Equal(t, 1, n.Sign())
		require.LessOrEqual(t, n.BitLen(), 128)
		require.False(t, seen[n.String()])
		seen[n.String()] = true
	}
}

func TestSignIntermediate(t *testing.T) {
	root, rootKey := makeCert(t, rootSpec("root"))
	key := newKey(t)
	csr := newCSR(t, key)
	for _, tt := range []struct {
		name       string
		req        MintRequest
		now        time.Time
		wantErr    string
		wantNotAft time.Time
		wantURI    string
		wantCN     string
	}{
		{name: "ok", req: MintRequest{CSR: csr, TTL: time.Hour, URISAN: "spiffe://example.org", CommonName: "inter"}, now: t0, wantNotAft: t0.Add(time.Hour), wantURI: "spiffe://example.org", wantCN: "inter"},
		{name: "no URI SAN", req: MintRequest{CSR: csr, TTL: time.Hour}, now: t0, wantNotAft: t0.Add(time.Hour)},
		{name: "capped at issuer expiry", req: MintRequest{CSR: csr, TTL: 10 * 365 * 24 * time.Hour}, now: t0, wantNotAft: root.NotAfter},
		{name: "zero TTL", req: MintRequest{CSR: csr}, now: t0, wantErr: "TTL must be positive"},
		{name: "negative TTL", req: MintRequest{CSR: csr, TTL: -time.Hour}, now: t0, wantErr: "TTL must be positive"},
		{name: "bad CSR", req: MintRequest{CSR: []byte("nope"), TTL: time.Hour}, now: t0, wantErr: "parse intermediate CSR"},
		{name: "bad CSR signature", req: MintRequest{CSR: flipLast(csr), TTL: time.Hour}, now: t0, wantErr: "intermediate CSR signature"},
		{name: "bad URI", req: MintRequest{CSR: csr, TTL: time.Hour, URISAN: "%zz"}, now: t0, wantErr: "URI SAN"},
		{name: "issuer expired", req: MintRequest{CSR: csr, TTL: time.Hour}, now: root.NotAfter.Add(time.Second), wantErr: "expired"},
		{name: "issuer expires now", req: MintRequest{CSR: csr, TTL: time.Hour}, now: root.NotAfter, wantErr: "expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := signIntermediate(tt.req, root, rootKey, tt.now)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, cert)
				return
			}
			require.NoError(t, err)
			requireIntermediate(t, cert, key.Public(), tt.wantURI, tt.wantCN)
			require.Equal(t, tt.now.Add(-min(IntermediateBackdate, tt.req.TTL/4)), cert.NotBefore)
			require.Equal(t, tt.wantNotAft, cert.NotAfter)
			require.Equal(t, []string{"Lanyard"}, cert.Subject.Organization)
			require.NoError(t, cert.CheckSignatureFrom(root))
			require.Equal(t, root.SubjectKeyId, cert.AuthorityKeyId)
		})
	}
}

func flipLast(b []byte) []byte {
	out := append([]byte(nil), b...)
	out[len(out)-1] ^= 0xff
	return out
}

// The minted intermediate has pathlen 0: a CA under it cannot sign
// anything that verifies.
func TestIntermediateCannotSignCA(t *testing.T) {
	root, rootKey := makeCert(t, rootSpec("root"))
	key := newKey(t)
	inter, err := signIntermediate(MintRequest{CSR: newCSR(t, key), TTL: time.Hour}, root, rootKey, t0)
	require.NoError(t, err)
	sub, subKey := makeCert(t, intermediateSpec("sub", inter, key))
	leaf, _ := makeCert(t, caSpec{cn: "leaf", keyUsage: x509.KeyUsageDigitalSignature, pathLen: -1, parent: sub, parentKey: subKey})
	direct, _ := makeCert(t, caSpec{cn: "direct", keyUsage: x509.KeyUsageDigitalSignature, pathLen: -1, parent: inter, parentKey: key})

	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	inters.AddCert(sub)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	_, err = direct.Verify(opts)
	require.NoError(t, err)
	_, err = leaf.Verify(opts)
	require.Error(t, err)
}

var (
	_ Authority = (*SelfSigned)(nil)
	_ Authority = (*Disk)(nil)
)
