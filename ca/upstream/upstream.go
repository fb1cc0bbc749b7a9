package upstream

import (
	"context"
	"crypto/x509"
	"time"
)

// Authority is where a CA replica's intermediate comes from. It signs the
// intermediate CSR of one replica; it never signs leaves and never sees the
// replica's private key.
//
// Implementations: SelfSigned (root kept in the data dir), Disk (operator's
// root or intermediate files), and vault (Vault PKI sign-intermediate).
type Authority interface {
	// MintX509CA signs the CSR as an intermediate CA certificate.
	MintX509CA(ctx context.Context, req MintRequest) (*MintResponse, error)
	// Bundle returns the current trust anchors (roots).
	Bundle(ctx context.Context) ([]*x509.Certificate, error)
}

// MintRequest asks for an intermediate CA certificate.
type MintRequest struct {
	// CSR is the DER PKCS#10 request of the replica's new intermediate key.
	CSR []byte
	// TTL is the desired lifetime; the authority may shorten it (never past
	// its own expiry).
	TTL time.Duration
	// URISAN, when set, is put in the intermediate as its URI SAN (the
	// trust domain's SPIFFE ID, spiffe://<td>).
	URISAN string
	// CommonName is the subject common name of the intermediate.
	CommonName string
}

// MintResponse is the signed intermediate.
type MintResponse struct {
	// CertChain holds the new intermediate first, then any upstream
	// intermediates, up to but excluding the root.
	CertChain []*x509.Certificate
	// Roots are the trust anchors that CertChain chains to.
	Roots []*x509.Certificate
}
