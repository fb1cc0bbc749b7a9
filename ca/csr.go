package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRSize bounds the DER (or PEM) size of a CSR the CA will look at.
const MaxCSRSize = 64 << 10

// RSA key sizes the CA accepts, in bits.
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

var (
	oidExtSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// knownCritical are the extensions a CSR may mark critical; they are
// checked below and never copied into the certificate as requested.
var knownCritical = []asn1.ObjectIdentifier{oidExtSubjectAltName, oidExtKeyUsage, oidExtExtKeyUsage, oidExtBasicConstraints}

// ParseCSRPEM decodes one PEM "CERTIFICATE REQUEST" block and parses it with
// ParseCSR. Trailing data after the block is refused.
func ParseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, MaxCSRSize)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
	}
	if len(pemTrim(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrInvalidCSR)
	}
	return ParseCSR(block.Bytes)
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// ParseCSR parses a DER PKCS#10 request and checks what does not depend on
// the identity: size, key type and size (before the signature, so that a
// huge RSA key costs nothing), and the self-signature.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidCSR)
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalidCSR, err)
	}
	return csr, nil
}

// checkPublicKey allows ECDSA P-256/P-384, RSA 2048–4096 and Ed25519.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s not allowed (P-256, P-384)", ErrInvalidCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < MinRSABits || bits > MaxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits not allowed (%d–%d)", ErrInvalidCSR, bits, MinRSABits, MaxRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: key type %T not allowed", ErrInvalidCSR, pub)
	}
	return nil
}

// ValidateCSR checks that csr asks for identity id and nothing it may not
// have: exactly one URI SAN equal to id (or none, in which case the CA sets
// it), DNS names only from allowedDNS, IP addresses only from allowedIPs, no
// e-mail addresses, no CA powers, no unknown critical extension.
//
// A CSR for another identity or for SANs outside the grant is
// ErrPermissionDenied; a malformed or dangerous one is ErrInvalidCSR.
func ValidateCSR(csr *x509.CertificateRequest, id spiffeid.ID, allowedDNS []string, allowedIPs []net.IP) error {
	switch len(csr.URIs) {
	case 0:
	case 1:
		got, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return fmt.Errorf("%w: URI SAN is not a SPIFFE ID: %v", ErrInvalidCSR, err)
		}
		if got != id {
			return fmt.Errorf("%w: CSR asks for %s, caller may have %s", ErrPermissionDenied, got, id)
		}
	default:
		return fmt.Errorf("%w: %d URI SANs, at most one allowed", ErrInvalidCSR, len(csr.URIs))
	}
	for _, name := range csr.DNSNames {
		if !slices.Contains(allowedDNS, name) {
			return fmt.Errorf("%w: DNS SAN %q not granted", ErrPermissionDenied, name)
		}
	}
	for _, ip := range csr.IPAddresses {
		if !slices.ContainsFunc(allowedIPs, ip.Equal) {
			return fmt.Errorf("%w: IP SAN %s not granted", ErrPermissionDenied, ip)
		}
	}
	if len(csr.EmailAddresses) > 0 {
		return fmt.Errorf("%w: e-mail SANs not allowed", ErrPermissionDenied)
	}
	return checkExtensions(csr)
}

func checkExtensions(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidExtBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return fmt.Errorf("%w: basic constraints: %v", ErrInvalidCSR, err)
			}
			if bc.IsCA {
				return fmt.Errorf("%w: CA:true requested", ErrInvalidCSR)
			}
		case ext.Id.Equal(oidExtKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				return fmt.Errorf("%w: key usage: %v", ErrInvalidCSR, err)
			}
			// Bit 5 keyCertSign, bit 6 cRLSign (RFC 5280 4.2.1.3).
			if bits.At(5) == 1 || bits.At(6) == 1 {
				return fmt.Errorf("%w: keyCertSign or cRLSign requested", ErrInvalidCSR)
			}
		case ext.Critical && !slices.ContainsFunc(knownCritical, ext.Id.Equal):
			return fmt.Errorf("%w: unknown critical extension %s", ErrInvalidCSR, ext.Id)
		}
	}
	return nil
}
