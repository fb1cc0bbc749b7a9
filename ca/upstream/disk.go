package upstream

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.step.sm/crypto/pemutil"
)

// DiskConfig names an operator's CA certificate and key on disk.
type DiskConfig struct {
	// CertFile holds the signing CA certificate (a root, or an intermediate
	// followed by its chain up to but excluding the root).
	CertFile string
	// KeyFile holds the signing CA's private key (PEM, PKCS#8/PKCS#1/SEC1).
	KeyFile string
	// BundleFile holds the roots. Optional when CertFile is a self-signed
	// root, required otherwise.
	BundleFile string
	Clock      func() time.Time
}

// Disk signs replica intermediates with an operator-provided CA.
type Disk struct {
	cert  *x509.Certificate
	chain []*x509.Certificate // upstream intermediates above cert, excluding the root
	key   crypto.Signer
	roots []*x509.Certificate
	clock func() time.Time
}

// NewDisk loads and checks the files: the key matches, the certificate is a
// CA, and it chains to the bundle.
func NewDisk(cfg DiskConfig) (*Disk, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("disk: cert and key files are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	certs, err := pemutil.ReadCertificateBundle(cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("disk: read %s: %w", cfg.CertFile, err)
	}
	_, key, err := loadPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("disk: %s is not a CA certificate with keyCertSign", cfg.CertFile)
	}
	d := &Disk{cert: cert, chain: certs[1:], key: key, clock: cfg.Clock}
	selfSigned := cert.CheckSignatureFrom(cert) == nil && len(certs) == 1
	switch {
	case cfg.BundleFile != "":
		if d.roots, err = pemutil.ReadCertificateBundle(cfg.BundleFile); err != nil {
			return nil, fmt.Errorf("disk: read %s: %w", cfg.BundleFile, err)
		}
	case selfSigned:
		d.roots = []*x509.Certificate{cert}
	default:
		return nil, errors.New("disk: bundle file is required when the certificate is not a self-signed root")
	}
	// Also for a self-signed root: a bundle file that does not hold it
	// would make every minted intermediate fail verification later.
	if err := d.verifyChain(); err != nil {
		return nil, err
	}
	// A root listed in the cert file is not part of the chain we send.
	d.chain = dropRoots(d.chain, d.roots)
	return d, nil
}

func (d *Disk) verifyChain() error {
	roots := x509.NewCertPool()
	for _, r := range d.roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range d.chain {
		inter.AddCert(c)
	}
	_, err := d.cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: d.clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("disk: CA certificate does not chain to the bundle: %w", err)
	}
	return nil
}

func dropRoots(chain, roots []*x509.Certificate) []*x509.Certificate {
	out := chain[:0:0]
	for _, c := range chain {
		isRoot := false
		for _, r := range roots {
			if c.Equal(r) {
				isRoot = true
			}
		}
		if !isRoot {
			out = append(out, c)
		}
	}
	return out
}

// MintX509CA signs the replica's intermediate with the operator's CA.
func (d *Disk) MintX509CA(_ context.Context, req MintRequest) (*MintResponse, error) {
	cert, err := signIntermediate(req, d.cert, d.key, d.clock())
	if err != nil {
		return nil, err
	}
	chain := []*x509.Certificate{cert}
	if !d.cert.Equal(d.roots[0]) || len(d.roots) > 1 {
		if !containsCert(d.roots, d.cert) {
			chain = append(chain, d.cert)
		}
	}
	chain = append(chain, d.chain...)
	return &MintResponse{CertChain: chain, Roots: d.roots}, nil
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	for _, s := range set {
		if s.Equal(c) {
			return true
		}
	}
	return false
}

// Bundle returns the operator's roots.
func (d *Disk) Bundle(context.Context) ([]*x509.Certificate, error) {
	return slices.Clone(d.roots), nil
}
