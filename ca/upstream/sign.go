package upstream

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"go.step.sm/crypto/x509util"
)

// IntermediateBackdate is how far before the signing time an
// intermediate's NotBefore is set (at most a quarter of its TTL): as the
// leaves it signs (ca.DefaultBackdate), so that a peer whose clock is a few
// minutes behind accepts the chain of a freshly rotated intermediate.
const IntermediateBackdate = 5 * time.Minute

// signIntermediate signs req's CSR with issuer/key as a CA:true, pathlen 0
// intermediate. NotAfter never passes the issuer's.
func signIntermediate(req MintRequest, issuer *x509.Certificate, key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("parse intermediate CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("intermediate CSR signature: %w", err)
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("intermediate TTL must be positive, got %s", req.TTL)
	}
	serial, err := RandomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(req.TTL)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("sign intermediate: issuer %q expired at %s", issuer.Subject.CommonName, issuer.NotAfter)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Lanyard"}, CommonName: req.CommonName},
		NotBefore:             now.Add(-min(IntermediateBackdate, req.TTL/4)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		PublicKey:             csr.PublicKey,
		PublicKeyAlgorithm:    csr.PublicKeyAlgorithm,
	}
	if req.URISAN != "" {
		u, err := url.Parse(req.URISAN)
		if err != nil {
			return nil, fmt.Errorf("intermediate URI SAN: %w", err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	cert, err := x509util.CreateCertificate(tmpl, issuer, csr.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	return cert, nil
}

// RandomSerial returns a random non-zero 128-bit serial number.
func RandomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
