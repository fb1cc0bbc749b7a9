package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/keyutil"
)

// ErrRefused marks an intermediate that an outside signer (Vault, step-ca)
// returned but that fails CheckMinted. It never reaches a gRPC client: the
// renewal fails, is logged, and the current intermediate stays in service.
var ErrRefused = errors.New("upstream intermediate refused")

// CheckMinted checks what an outside signer returned before it is used: the
// first certificate of chain is for the CSR's public key, is a CA with
// keyCertSign whose path length still allows leaves under it, carries
// uriSAN (the trust domain's SPIFFE ID) when set, and chains through the
// rest of chain to one of roots at now. Any failure wraps ErrRefused.
func CheckMinted(csrDER []byte, uriSAN string, chain, roots []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: no certificate returned", ErrRefused)
	}
	if len(roots) == 0 {
		return fmt.Errorf("%w: no trusted root to check against", ErrRefused)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return fmt.Errorf("parse intermediate CSR: %w", err)
	}
	cert := chain[0]
	if !keyutil.Equal(cert.PublicKey, csr.PublicKey) {
		return fmt.Errorf("%w: certificate is not for our public key", ErrRefused)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("%w: certificate is not a CA (basic constraints CA:false)", ErrRefused)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: certificate lacks keyCertSign", ErrRefused)
	}
	// MaxPathLen 0 with MaxPathLenZero, or unset (-1 / 0 without the flag):
	// both let this CA sign leaves, which is all a replica does.
	if cert.MaxPathLen < -1 {
		return fmt.Errorf("%w: invalid path length %d", ErrRefused, cert.MaxPathLen)
	}
	if uriSAN != "" && !hasURI(cert, uriSAN) {
		return fmt.Errorf("%w: certificate does not carry the URI SAN %s", ErrRefused, uriSAN)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%w: does not chain to the configured root: %w", ErrRefused, err)
	}
	return nil
}

func hasURI(cert *x509.Certificate, uri string) bool {
	for _, u := range cert.URIs {
		if u.String() == uri {
			return true
		}
	}
	return false
}
