package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// FuzzValidateCSR feeds arbitrary bytes through ParseCSR and ValidateCSR.
// Neither may panic, and whatever both accept must hold the invariants the
// CA relies on, checked here independently of csr.go.
func FuzzValidateCSR(f *testing.F) {
	id := mustID(f, workloadURI("default", "api"))
	allowedDNS := []string{"api.default.svc"}
	allowedIPs := []net.IP{net.ParseIP("10.0.0.1")}

	for _, der := range [][]byte{
		csrFor(f, keyP256),
		csrFor(f, keyP384, withURIs(id.String())),
		csrFor(f, keyEd25519, withDNS("api.default.svc"), withIPs("10.0.0.1")),
		csrFor(f, keyRSA2048, withURIs(id.String())),
		csrFor(f, keyP256, withURIs(workloadURI("default", "admin"))),
		csrFor(f, keyP256, withURIs(id.String(), id.String())),
		csrFor(f, keyP256, withURIs("https://example.org/")),
		csrFor(f, keyP256, withDNS("evil.example.org")),
		csrFor(f, keyP256, withEmail("root@example.org")),
		csrFor(f, keyP256, withExt(oidExtBasicConstraints, true, bcCATrue)),
		csrFor(f, keyP256, withExt(oidExtBasicConstraints, true, bcCAFalse)),
		csrFor(f, keyP256, withExt(oidExtKeyUsage, true, kuKeyCertSign)),
		csrFor(f, keyP256, withExt(oidExtKeyUsage, true, kuDigitalSignature)),
		csrFor(f, keyP256, withExt(oidUnknown, true, asn1Null)),
		csrFor(f, keyP224),
		csrFor(f, keyRSA1024),
		breakSignature(csrFor(f, keyP256)),
		nil,
		{0x30, 0x00},
	} {
		f.Add(der)
	}

	// A throwaway issuer for the "careless CA" check below.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(f, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}

	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseCSR(der)
		if err == nil {
			require.LessOrEqual(t, len(der), MaxCSRSize)
			requireAllowedKey(t, csr.PublicKey)
			require.NoError(t, csr.CheckSignature())
		} else {
			require.ErrorIs(t, err, ErrInvalidCSR)
			require.Nil(t, csr)
			// A mutation nearly always breaks the signature, which
			// ValidateCSR does not look at: give it every request Go can
			// parse, so that the fuzzer reaches the SAN and extension
			// checks too.
			if csr, err = x509.ParseCertificateRequest(der); err != nil {
				return
			}
		}

		err = ValidateCSR(csr, id, allowedDNS, allowedIPs)
		if err != nil {
			if !errorIsOne(err, ErrInvalidCSR, ErrPermissionDenied) {
				t.Fatalf("ValidateCSR error %v wraps neither ErrInvalidCSR nor ErrPermissionDenied", err)
			}
			return
		}

		// Accepted: only our identity and granted SANs.
		require.LessOrEqual(t, len(csr.URIs), 1)
		if len(csr.URIs) == 1 {
			require.Equal(t, id.String(), csr.URIs[0].String())
		}
		for _, name := range csr.DNSNames {
			require.Contains(t, allowedDNS, name)
		}
		for _, ip := range csr.IPAddresses {
			require.True(t, slices.ContainsFunc(allowedIPs, ip.Equal), "IP %s", ip)
		}
		require.Empty(t, csr.EmailAddresses)

		// No CA powers, judged by Go's certificate parser rather than
		// csr.go: a careless CA that copied every requested extension
		// into a certificate would still not have made a CA.
		tmpl := *caTmpl
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = false, false, 0
		tmpl.SerialNumber = big.NewInt(2)
		tmpl.ExtraExtensions = csr.Extensions
		certDER, err := x509.CreateCertificate(rand.Reader, &tmpl, caTmpl, caKey.Public(), caKey)
		if err != nil {
			return // duplicate or unencodable extensions: nobody would issue it
		}
		cert, err := x509.ParseCertificate(certDER)
		if err != nil {
			return // malformed extension values: nobody could use it
		}
		require.False(t, cert.IsCA, "accepted CSR asks for CA:true")
		require.Zero(t, cert.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign), "accepted CSR asks for keyCertSign/cRLSign")
		require.Empty(t, cert.UnhandledCriticalExtensions, "accepted CSR carries an unknown critical extension")
		for _, e := range csr.Extensions {
			if !e.Critical {
				continue
			}
			require.True(t, slices.ContainsFunc(knownCriticalForTest, e.Id.Equal), "critical %s", e.Id)
		}
	})
}

// knownCriticalForTest is csr.go's list, written out again.
var knownCriticalForTest = []asn1.ObjectIdentifier{
	{2, 5, 29, 17}, {2, 5, 29, 15}, {2, 5, 29, 37}, {2, 5, 29, 19},
}

func requireAllowedKey(t *testing.T, pub any) {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		name := k.Curve.Params().Name
		require.True(t, name == "P-256" || name == "P-384", "curve %s", name)
	case *rsa.PublicKey:
		require.GreaterOrEqual(t, k.N.BitLen(), 2048)
		require.LessOrEqual(t, k.N.BitLen(), 4096)
	case ed25519.PublicKey:
		require.Len(t, k, ed25519.PublicKeySize)
	default:
		t.Fatalf("key type %T accepted", pub)
	}
}

func errorIsOne(err error, targets ...error) bool {
	n := 0
	for _, target := range targets {
		if errors.Is(err, target) {
			n++
		}
	}
	return n == 1
}

// FuzzWorkloadID checks that an ID is only ever made of exactly the two
// names given, in their places, and parses back.
func FuzzWorkloadID(f *testing.F) {
	for _, s := range [][2]string{
		{"default", "api"},
		{"kube-system", "coredns"},
		{"ns", "my.sa"},
		{"..", "x"},
		{"ns", "../x"},
		{"ns", "a/sa/b"},
		{"NS", "sa"},
		{"ns", "sa%2fx"},
		{"ns", "sa?x"},
		{"ns", "sa#x"},
		{"", ""},
		{strings.Repeat("a", 63), strings.Repeat("b", 253)},
		{strings.Repeat("a", 64), "b"},
		{"ns", "a..b"},
		{"ns", "\u00e9"},
		{"ns\n", "sa"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ns, sa string) {
		id, err := WorkloadID(testTD, ns, sa)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidRequest)
			require.True(t, id.IsZero())
			return
		}
		require.Equal(t, "/ns/"+ns+"/sa/"+sa, id.Path())
		require.Equal(t, testTD, id.TrustDomain())
		back, err := spiffeid.FromString(id.String())
		require.NoError(t, err)
		require.Equal(t, id, back)
		require.Equal(t, "spiffe://example.org/ns/"+ns+"/sa/"+sa, back.String())
		// Neither name can hold a separator or a relative segment.
		require.NotContains(t, ns, "/")
		require.NotContains(t, sa, "/")
		require.NotEqual(t, ".", sa)
		require.NotEqual(t, "..", sa)
	})
}
