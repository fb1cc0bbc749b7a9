package harness

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

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// KeyType is a kind of key pair for a CSR.
type KeyType struct {
	Name     string
	generate func() (crypto.Signer, error)
	cache    bool
}

func (k KeyType) String() string { return k.Name }

// Key types. The CA accepts P256, P384, Ed25519 and RSA 2048–4096; P224 and
// smaller RSA keys are there to be refused.
var (
	P256    = ecdsaKey("P-256", elliptic.P256())
	P384    = ecdsaKey("P-384", elliptic.P384())
	P521    = ecdsaKey("P-521", elliptic.P521())
	P224    = ecdsaKey("P-224", elliptic.P224())
	Ed25519 = KeyType{Name: "Ed25519", generate: func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}}
)

func ecdsaKey(name string, c elliptic.Curve) KeyType {
	return KeyType{Name: name, generate: func() (crypto.Signer, error) { return ecdsa.GenerateKey(c, rand.Reader) }}
}

// RSA is an RSA key of bits bits. RSA keys are slow to make, so one key
// per size is made and shared by every CSR of the test binary.
func RSA(bits int) KeyType {
	return KeyType{Name: fmt.Sprintf("RSA-%d", bits), cache: true, generate: func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, bits)
	}}
}

var keyCache sync.Map // KeyType.Name → func() (crypto.Signer, error) (sync.OnceValues)

// NewKey returns a key of type k (a shared one for RSA).
func NewKey(t testing.TB, k KeyType) crypto.Signer {
	t.Helper()
	if k.generate == nil {
		k = P256
	}
	gen := k.generate
	if k.cache {
		v, _ := keyCache.LoadOrStore(k.Name, sync.OnceValues(k.generate))
		gen = v.(func() (crypto.Signer, error))
	}
	key, err := gen()
	if err != nil {
		t.Fatalf("harness: generate %s key: %v", k.Name, err)
	}
	return key
}

// CSROptions says what NewCSR puts in a request. The zero value is a P-256
// CSR with no SAN, which the CA completes with the caller's SPIFFE ID.
type CSROptions struct {
	// Key is the key type (default P256); Signer, when set, is used instead.
	Key    KeyType
	Signer crypto.Signer
	// URIs are URI SANs, for example the SPIFFE ID asked for.
	URIs []string
	// DNSNames and IPs are extra SANs.
	DNSNames []string
	IPs      []net.IP
	// IsCA adds a basicConstraints extension with CA:true.
	IsCA bool
	// Extensions are added as they are.
	Extensions []pkix.Extension
}

// CSR is a DER PKCS#10 request and its private key.
type CSR struct {
	DER []byte
	Key crypto.Signer
}

// NewCSR builds a signed CSR.
func NewCSR(t testing.TB, o CSROptions) *CSR {
	t.Helper()
	key := o.Signer
	if key == nil {
		key = NewKey(t, o.Key)
	}
	tmpl := &x509.CertificateRequest{
		DNSNames:        o.DNSNames,
		IPAddresses:     o.IPs,
		ExtraExtensions: o.Extensions,
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("harness: CSR URI %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if o.IsCA {
		type basicConstraints struct {
			IsCA bool `asn1:"optional"`
		}
		v, err := asn1.Marshal(basicConstraints{IsCA: true})
		if err != nil {
			t.Fatalf("harness: basic constraints: %v", err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{
			Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v,
		})
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("harness: create CSR: %v", err)
	}
	return &CSR{DER: der, Key: key}
}

// SVID turns the CA's answer to this CSR into an SVID with the CSR's key.
// It fails the test unless the chain is a well-formed X.509-SVID whose
// leaf matches the key (it does not verify the chain: see x509svid.Verify).
func (c *CSR) SVID(t testing.TB, s *cav1.X509SVID) *x509svid.SVID {
	t.Helper()
	if s == nil || len(s.GetCertChain()) == 0 {
		t.Fatal("harness: answer has no SVID")
	}
	var certs []byte
	for _, der := range s.GetCertChain() {
		certs = append(certs, der...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatalf("harness: marshal key: %v", err)
	}
	svid, err := x509svid.ParseRaw(certs, key)
	if err != nil {
		t.Fatalf("harness: parse SVID: %v", err)
	}
	if svid.ID.String() != s.GetSpiffeId() {
		t.Fatalf("harness: SVID certificate is %s, answer says %s", svid.ID, s.GetSpiffeId())
	}
	return svid
}

// FakeRSACSR returns a well-formed DER CSR for a random RSA public key of
// bits bits with a random signature. Nobody holds the private key: it tests
// that the CA refuses a key by its size before it spends time on the
// signature, and refuses the signature of an allowed size.
func FakeRSACSR(t testing.TB, bits int) []byte {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	n.SetBit(n, bits-1, 1)
	n.SetBit(n, 0, 1)
	spki, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	subject, err := asn1.Marshal(pkix.RDNSequence{})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	info, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}, []asn1.RawValue{}})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	sig := make([]byte, bits/8)
	if _, err := rand.Read(sig); err != nil {
		t.Fatalf("harness: %v", err)
	}
	sha256WithRSA := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	der, err := asn1.Marshal(struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{
		asn1.RawValue{FullBytes: info},
		pkix.AlgorithmIdentifier{Algorithm: sha256WithRSA, Parameters: asn1.NullRawValue},
		asn1.BitString{Bytes: sig, BitLength: len(sig) * 8},
	})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return der
}
