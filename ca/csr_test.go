package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	// keyUsage values as BIT STRINGs, bit 0 first (RFC 5280 4.2.1.3).
	kuDigitalSignature = mustMarshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})
	kuKeyCertSign      = mustMarshal(asn1.BitString{Bytes: []byte{0x84}, BitLength: 6}) // digitalSignature|keyCertSign
	kuCRLSign          = mustMarshal(asn1.BitString{Bytes: []byte{0x02}, BitLength: 7})
	bcCATrue           = []byte{0x30, 0x03, 0x01, 0x01, 0xff}
	bcCAFalse          = []byte{0x30, 0x00}
	bcGarbage          = []byte{0x04, 0x01, 0x00}
	asn1Null           = []byte{0x05, 0x00}
	oidUnknown         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestParseCSR covers what ParseCSR checks on its own: size, key type and
// size, signature.
func TestParseCSR(t *testing.T) {
	for _, tt := range []struct {
		name    string
		der     func(t *testing.T) []byte
		wantErr string // empty: accepted; otherwise ErrInvalidCSR with this text
	}{
		{name: "ECDSA P-256", der: func(t *testing.T) []byte { return csrFor(t, keyP256) }},
		{name: "ECDSA P-384", der: func(t *testing.T) []byte { return csrFor(t, keyP384) }},
		{name: "Ed25519", der: func(t *testing.T) []byte { return csrFor(t, keyEd25519) }},
		{name: "RSA 2048", der: func(t *testing.T) []byte { return csrFor(t, keyRSA2048) }},
		{name: "RSA 3072", der: func(t *testing.T) []byte { return csrFor(t, keyRSA3072) }},
		{name: "RSA 4096", der: func(t *testing.T) []byte { return csrFor(t, keyRSA4096) }},
		{name: "ECDSA P-224", der: func(t *testing.T) []byte { return csrFor(t, keyP224) }, wantErr: "curve P-224 not allowed"},
		{name: "ECDSA P-521", der: func(t *testing.T) []byte { return csrFor(t, keyP521) }, wantErr: "curve P-521 not allowed"},
		{name: "RSA 1024", der: func(t *testing.T) []byte { return csrFor(t, keyRSA1024) }, wantErr: "RSA key of 1024 bits not allowed"},
		{
			// The size is checked before the signature: a small key with a
			// broken signature is refused for its size.
			name:    "RSA 1024 broken signature",
			der:     func(t *testing.T) []byte { return breakSignature(csrFor(t, keyRSA1024)) },
			wantErr: "RSA key of 1024 bits not allowed",
		},
		{
			// Nobody has to generate an 8192-bit key to be refused: the
			// size is checked before the (here broken) signature.
			name: "RSA 8192",
			der: func(t *testing.T) []byte {
				return csrWithPublicKey(t, csrFor(t, keyRSA2048), fakeRSAPublicKey(t, 8192))
			},
			wantErr: "RSA key of 8192 bits not allowed",
		},
		{
			name: "RSA 4097",
			der: func(t *testing.T) []byte {
				return csrWithPublicKey(t, csrFor(t, keyRSA2048), fakeRSAPublicKey(t, 4097))
			},
			wantErr: "RSA key of 4097 bits not allowed",
		},
		{
			name: "RSA 2047",
			der: func(t *testing.T) []byte {
				return csrWithPublicKey(t, csrFor(t, keyRSA2048), fakeRSAPublicKey(t, 2047))
			},
			wantErr: "RSA key of 2047 bits not allowed",
		},
		{
			name: "allowed key swapped in",
			der: func(t *testing.T) []byte {
				return csrWithPublicKey(t, csrFor(t, keyP256), testKey(t, keyP384).Public())
			},
			wantErr: "signature",
		},
		{name: "ECDSA bad signature", der: func(t *testing.T) []byte { return breakSignature(csrFor(t, keyP256)) }, wantErr: "signature"},
		{name: "Ed25519 bad signature", der: func(t *testing.T) []byte { return breakSignature(csrFor(t, keyEd25519)) }, wantErr: "signature"},
		{name: "RSA bad signature", der: func(t *testing.T) []byte { return breakSignature(csrFor(t, keyRSA2048)) }, wantErr: "signature"},
		{
			name:    "truncated",
			der:     func(t *testing.T) []byte { d := csrFor(t, keyP256); return d[:len(d)/2] },
			wantErr: "invalid CSR",
		},
		{
			name:    "trailing data",
			der:     func(t *testing.T) []byte { return append(csrFor(t, keyP256), 0) },
			wantErr: "invalid CSR",
		},
		{name: "empty", der: func(*testing.T) []byte { return nil }, wantErr: "empty"},
		{name: "garbage", der: func(*testing.T) []byte { return []byte("not a CSR") }, wantErr: "invalid CSR"},
		{
			name: "a certificate",
			der: func(t *testing.T) []byte {
				return newTestCA(t, caOptions{}).auth.Bundle().Roots[0].Raw
			},
			wantErr: "invalid CSR",
		},
		{
			name:    "oversize",
			der:     func(*testing.T) []byte { return make([]byte, MaxCSRSize+1) },
			wantErr: "larger than 65536 bytes",
		},
		{
			// A real, well-signed CSR over the bound (a huge DNS SAN list).
			name: "oversize valid CSR",
			der: func(t *testing.T) []byte {
				names := make([]string, 0, 3000)
				for range cap(names) {
					names = append(names, "a-rather-long-name-for-padding.example.org")
				}
				der := csrFor(t, keyP256, withDNS(names...))
				require.Greater(t, len(der), MaxCSRSize)
				return der
			},
			wantErr: "larger than 65536 bytes",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.der(t))
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NotNil(t, csr)
				return
			}
			require.ErrorIs(t, err, ErrInvalidCSR)
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, csr)
		})
	}
}

// TestRSA1024SizeBeforeSignature shows the order of the checks: the broken
// signature alone is reported as a signature error, and with a small key
// the size is reported instead.
func TestRSA1024SizeBeforeSignature(t *testing.T) {
	_, err := ParseCSR(breakSignature(csrFor(t, keyRSA2048)))
	require.ErrorIs(t, err, ErrInvalidCSR)
	require.ErrorContains(t, err, "signature")

	_, err = ParseCSR(breakSignature(csrFor(t, keyRSA1024)))
	require.ErrorIs(t, err, ErrInvalidCSR)
	require.ErrorContains(t, err, "1024 bits")
	require.NotContains(t, err.Error(), "signature")
}

// TestValidateCSR covers the identity-dependent checks, after ParseCSR.
func TestValidateCSR(t *testing.T) {
	id := mustID(t, workloadURI("default", "api"))
	allowedDNS := []string{"api.default.svc", "api.example.org"}
	allowedIPs := []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")}

	for _, tt := range []struct {
		name    string
		key     string // default P-256
		opts    []csrOpt
		wantErr error
		wantMsg string
	}{
		{name: "no SANs"},
		{name: "own URI SAN", opts: []csrOpt{withURIs(id.String())}},
		{name: "own URI SAN RSA", key: keyRSA2048, opts: []csrOpt{withURIs(id.String())}},
		{name: "own URI SAN Ed25519", key: keyEd25519, opts: []csrOpt{withURIs(id.String())}},
		{name: "other identity", opts: []csrOpt{withURIs(workloadURI("default", "admin"))}, wantErr: ErrPermissionDenied, wantMsg: "caller may have"},
		{name: "other namespace", opts: []csrOpt{withURIs(workloadURI("kube-system", "api"))}, wantErr: ErrPermissionDenied},
		{name: "other trust domain", opts: []csrOpt{withURIs("spiffe://other.org/ns/default/sa/api")}, wantErr: ErrPermissionDenied},
		{name: "trust domain ID", opts: []csrOpt{withURIs("spiffe://example.org")}, wantErr: ErrPermissionDenied},
		{name: "two URI SANs", opts: []csrOpt{withURIs(id.String(), id.String())}, wantErr: ErrInvalidCSR, wantMsg: "2 URI SANs"},
		{name: "two different URI SANs", opts: []csrOpt{withURIs(id.String(), workloadURI("default", "admin"))}, wantErr: ErrInvalidCSR},
		{name: "non-SPIFFE URI", opts: []csrOpt{withURIs("https://example.org/ns/default/sa/api")}, wantErr: ErrInvalidCSR, wantMsg: "not a SPIFFE ID"},
		{name: "SPIFFE URI with query", opts: []csrOpt{withURIs(id.String() + "?x=1")}, wantErr: ErrInvalidCSR},
		{name: "SPIFFE URI uppercase trust domain", opts: []csrOpt{withURIs("spiffe://EXAMPLE.org/ns/default/sa/api")}, wantErr: ErrInvalidCSR},
		{name: "DNS granted", opts: []csrOpt{withDNS("api.default.svc")}},
		{name: "DNS all granted", opts: []csrOpt{withURIs(id.String()), withDNS("api.example.org", "api.default.svc")}},
		{name: "DNS not granted", opts: []csrOpt{withDNS("evil.example.org")}, wantErr: ErrPermissionDenied, wantMsg: `"evil.example.org" not granted`},
		{name: "DNS one of two not granted", opts: []csrOpt{withDNS("api.default.svc", "evil.example.org")}, wantErr: ErrPermissionDenied},
		{name: "DNS wildcard not granted", opts: []csrOpt{withDNS("*.example.org")}, wantErr: ErrPermissionDenied},
		{name: "IP granted", opts: []csrOpt{withIPs("10.0.0.1")}},
		{name: "IPv6 granted", opts: []csrOpt{withIPs("2001:db8::1")}},
		{name: "IP not granted", opts: []csrOpt{withIPs("10.0.0.2")}, wantErr: ErrPermissionDenied, wantMsg: "IP SAN 10.0.0.2 not granted"},
		{name: "email", opts: []csrOpt{withEmail("root@example.org")}, wantErr: ErrPermissionDenied, wantMsg: "e-mail"},
		{name: "CA:true", opts: []csrOpt{withExt(oidExtBasicConstraints, true, bcCATrue)}, wantErr: ErrInvalidCSR, wantMsg: "CA:true"},
		{name: "CA:true not critical", opts: []csrOpt{withExt(oidExtBasicConstraints, false, bcCATrue)}, wantErr: ErrInvalidCSR, wantMsg: "CA:true"},
		{name: "CA:false", opts: []csrOpt{withExt(oidExtBasicConstraints, true, bcCAFalse)}},
		{name: "basic constraints garbage", opts: []csrOpt{withExt(oidExtBasicConstraints, false, bcGarbage)}, wantErr: ErrInvalidCSR},
		{name: "keyCertSign", opts: []csrOpt{withExt(oidExtKeyUsage, true, kuKeyCertSign)}, wantErr: ErrInvalidCSR, wantMsg: "keyCertSign"},
		{name: "cRLSign", opts: []csrOpt{withExt(oidExtKeyUsage, false, kuCRLSign)}, wantErr: ErrInvalidCSR},
		{name: "digitalSignature", opts: []csrOpt{withExt(oidExtKeyUsage, true, kuDigitalSignature)}},
		{name: "key usage garbage", opts: []csrOpt{withExt(oidExtKeyUsage, true, asn1Null)}, wantErr: ErrInvalidCSR},
		{name: "unknown critical extension", opts: []csrOpt{withExt(oidUnknown, true, asn1Null)}, wantErr: ErrInvalidCSR, wantMsg: "unknown critical extension 1.3.6.1.4.1.99999.1"},
		{name: "unknown non-critical extension", opts: []csrOpt{withExt(oidUnknown, false, asn1Null)}},
		{
			name:    "critical extended key usage",
			opts:    []csrOpt{withExt(oidExtExtKeyUsage, true, mustMarshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}}))},
			wantErr: nil,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			if key == "" {
				key = keyP256
			}
			csr, err := ParseCSR(csrFor(t, key, tt.opts...))
			require.NoError(t, err)
			err = ValidateCSR(csr, id, allowedDNS, allowedIPs)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr == ErrInvalidCSR {
				require.NotErrorIs(t, err, ErrPermissionDenied)
			} else {
				require.NotErrorIs(t, err, ErrInvalidCSR)
			}
			if tt.wantMsg != "" {
				require.ErrorContains(t, err, tt.wantMsg)
			}
		})
	}
}

func TestValidateCSRNoGrants(t *testing.T) {
	id := mustID(t, workloadURI("default", "api"))
	for _, tt := range []struct {
		name string
		opts []csrOpt
	}{
		{name: "DNS", opts: []csrOpt{withDNS("api.default.svc")}},
		{name: "IP", opts: []csrOpt{withIPs("127.0.0.1")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(csrFor(t, keyP256, tt.opts...))
			require.NoError(t, err)
			require.ErrorIs(t, ValidateCSR(csr, id, nil, nil), ErrPermissionDenied)
		})
	}
}

func TestParseCSRPEM(t *testing.T) {
	der := csrFor(t, keyP256)
	block := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	good := block("CERTIFICATE REQUEST", der)

	for _, tt := range []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{name: "valid", data: good},
		{name: "legacy type", data: block("NEW CERTIFICATE REQUEST", der)},
		{name: "trailing newlines", data: append(bytes.Clone(good), "\n\r\n \t"...)},
		{name: "no trailing newline", data: bytes.TrimRight(good, "\n")},
		{name: "wrong block type", data: block("CERTIFICATE", der), wantErr: `PEM block is "CERTIFICATE"`},
		{name: "private key block", data: block("PRIVATE KEY", der), wantErr: "want CERTIFICATE REQUEST"},
		{name: "trailing garbage", data: append(bytes.Clone(good), "garbage"...), wantErr: "data after the PEM block"},
		{name: "two blocks", data: append(bytes.Clone(good), good...), wantErr: "data after the PEM block"},
		{name: "no block", data: []byte("hello"), wantErr: "no PEM block"},
		{name: "raw DER", data: der, wantErr: "no PEM block"},
		{name: "empty", data: nil, wantErr: "no PEM block"},
		{name: "truncated", data: good[:len(good)/2], wantErr: "no PEM block"},
		{name: "bad DER inside", data: block("CERTIFICATE REQUEST", der[:len(der)-3]), wantErr: "invalid CSR"},
		{name: "empty block", data: block("CERTIFICATE REQUEST", nil), wantErr: "empty"},
		{name: "bad signature inside", data: block("CERTIFICATE REQUEST", breakSignature(der)), wantErr: "signature"},
		{name: "oversize", data: append(bytes.Clone(good), bytes.Repeat([]byte("\n"), MaxCSRSize)...), wantErr: "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSRPEM(tt.data)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, der, csr.Raw)
				return
			}
			require.ErrorIs(t, err, ErrInvalidCSR)
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, csr)
		})
	}
}

// TestParseCSRKeepsExtensions makes sure the extensions ValidateCSR looks
// at are really those of the request, whatever Go's parser does with them.
func TestParseCSRKeepsExtensions(t *testing.T) {
	csr, err := ParseCSR(csrFor(t, keyP256, withExt(oidExtBasicConstraints, true, bcCATrue)))
	require.NoError(t, err)
	var found bool
	for _, e := range csr.Extensions {
		found = found || e.Id.Equal(oidExtBasicConstraints)
	}
	require.True(t, found)
	require.Equal(t, x509.ECDSA, csr.PublicKeyAlgorithm)
}
