package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/lanyard-id/lanyard/internal/clocktest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// t0 is the fake "now" of every test: whole seconds, because X.509 times
// have second precision.
var t0 = clocktest.T0

func newFakeClock() *clocktest.Clock { return clocktest.New(t0) }

// Key types used to build CSRs. Keys are generated once per test binary:
// RSA generation is slow, and the race detector makes it slower.
const (
	keyP224    = "P-224"
	keyP256    = "P-256"
	keyP384    = "P-384"
	keyP521    = "P-521"
	keyEd25519 = "Ed25519"
	keyRSA1024 = "RSA-1024"
	keyRSA2048 = "RSA-2048"
	keyRSA3072 = "RSA-3072"
	keyRSA4096 = "RSA-4096"
)

var (
	keysMu sync.Mutex
	keys   = map[string]crypto.Signer{}
)

func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case keyP224:
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case keyP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case keyP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case keyP521:
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case keyEd25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case keyRSA1024:
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case keyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case keyRSA3072:
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case keyRSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	require.NoError(t, err, kind)
	keys[kind] = k
	return k
}

// csrOpt changes the CSR template before signing.
type csrOpt func(*x509.CertificateRequest)

func withURIs(uris ...string) csrOpt {
	return func(r *x509.CertificateRequest) {
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				panic(err)
			}
			r.URIs = append(r.URIs, u)
		}
	}
}

func withDNS(names ...string) csrOpt {
	return func(r *x509.CertificateRequest) { r.DNSNames = append(r.DNSNames, names...) }
}

func withIPs(ips ...string) csrOpt {
	return func(r *x509.CertificateRequest) {
		for _, s := range ips {
			r.IPAddresses = append(r.IPAddresses, net.ParseIP(s))
		}
	}
}

func withEmail(addrs ...string) csrOpt {
	return func(r *x509.CertificateRequest) { r.EmailAddresses = append(r.EmailAddresses, addrs...) }
}

func withExt(oid asn1.ObjectIdentifier, critical bool, value []byte) csrOpt {
	return func(r *x509.CertificateRequest) {
		r.ExtraExtensions = append(r.ExtraExtensions, pkix.Extension{Id: oid, Critical: critical, Value: value})
	}
}

// makeCSR returns the DER of a CSR signed by key.
func makeCSR(t testing.TB, key crypto.Signer, opts ...csrOpt) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	return der
}

// csrFor returns a CSR of the given key kind.
func csrFor(t testing.TB, kind string, opts ...csrOpt) []byte {
	t.Helper()
	return makeCSR(t, testKey(t, kind), opts...)
}

// breakSignature flips the last byte of a CSR, which is the last byte of
// its signature.
func breakSignature(der []byte) []byte {
	out := append([]byte(nil), der...)
	out[len(out)-1] ^= 0xff
	return out
}

// rawCSR and rawTBS let a test put any public key into a CSR without
// having (or generating) its private key. The signature is left as it was
// and so no longer verifies.
type rawCSR struct {
	TBS    asn1.RawValue
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

type rawTBS struct {
	Version int
	Subject asn1.RawValue
	SPKI    asn1.RawValue
	Attrs   asn1.RawValue
}

func csrWithPublicKey(t testing.TB, base []byte, pub any) []byte {
	t.Helper()
	var c rawCSR
	_, err := asn1.Unmarshal(base, &c)
	require.NoError(t, err)
	var tbs rawTBS
	_, err = asn1.Unmarshal(c.TBS.FullBytes, &tbs)
	require.NoError(t, err)
	spki, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	tbs.SPKI = asn1.RawValue{FullBytes: spki}
	tbsDER, err := asn1.Marshal(tbs)
	require.NoError(t, err)
	c.TBS = asn1.RawValue{FullBytes: tbsDER}
	der, err := asn1.Marshal(c)
	require.NoError(t, err)
	return der
}

// fakeRSAPublicKey is an RSA public key of exactly bits bits whose private
// key nobody has.
func fakeRSAPublicKey(t testing.TB, bits int) *rsa.PublicKey {
	t.Helper()
	top := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n, err := rand.Int(rand.Reader, top)
	require.NoError(t, err)
	n.Or(n, top).SetBit(n, 0, 1)
	require.Equal(t, bits, n.BitLen())
	return &rsa.PublicKey{N: n, E: 65537}
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	require.NoError(t, err)
	return id
}

func workloadURI(ns, sa string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", testTD.Name(), ns, sa)
}
