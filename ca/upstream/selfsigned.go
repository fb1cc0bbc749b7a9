package upstream

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/lanyard-id/lanyard/internal/atomicfile"
)

// File names of the self-signed root inside its directory.
const (
	SelfSignedCertFile = "root.pem"
	SelfSignedKeyFile  = "root-key.pem"
)

// SelfSignedConfig configures a self-signed root kept on local disk.
type SelfSignedConfig struct {
	// Dir holds root.pem and root-key.pem (0600). Required.
	Dir string
	// TrustDomain names the root: subject "Lanyard root <td>", URI SAN spiffe://<td>.
	TrustDomain string
	// TTL of a newly generated root. Default 10 years.
	TTL time.Duration
	// KeyType and Curve/Size of a new root key: "EC" "P-256" (default),
	// "EC" "P-384", "RSA" with Size 2048–4096, "OKP" "Ed25519".
	KeyType string
	Curve   string
	Size    int
	Clock   func() time.Time
	Logger  *slog.Logger
}

// SelfSigned is a root generated on first start and kept in a directory,
// so that it survives restarts. It is the default for a single node.
type SelfSigned struct {
	cert  *x509.Certificate
	key   crypto.Signer
	clock func() time.Time
}

// NewSelfSigned loads the root from cfg.Dir, generating it on first start.
func NewSelfSigned(cfg SelfSignedConfig) (*SelfSigned, error) {
	if cfg.Dir == "" {
		return nil, errors.New("selfsigned: dir is required")
	}
	cfg.fill()
	certPath := filepath.Join(cfg.Dir, SelfSignedCertFile)
	keyPath := filepath.Join(cfg.Dir, SelfSignedKeyFile)
	cert, key, err := loadPair(certPath, keyPath)
	switch {
	case err == nil:
		cfg.Logger.Info("loaded self-signed root", "subject", cert.Subject.String(), "not_after", cert.NotAfter)
		return &SelfSigned{cert: cert, key: key, clock: cfg.Clock}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	// A root is made only when there is no certificate. When only the key
	// is gone, the root was published: a new one would silently break
	// every workload's trust.
	if _, statErr := os.Stat(certPath); statErr == nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	cert, key, err = generateRoot(cfg)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("selfsigned: create dir: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	cfg.Logger.Info("generated self-signed root", "subject", cert.Subject.String(), "not_after", cert.NotAfter, "dir", cfg.Dir)
	return &SelfSigned{cert: cert, key: key, clock: cfg.Clock}, nil
}

// fill sets the defaults of every field but Dir.
func (cfg *SelfSignedConfig) fill() {
	if cfg.TTL == 0 {
		cfg.TTL = 10 * 365 * 24 * time.Hour
	}
	if cfg.KeyType == "" {
		cfg.KeyType, cfg.Curve = "EC", "P-256"
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

func generateRoot(cfg SelfSignedConfig) (*x509.Certificate, crypto.Signer, error) {
	key, err := keyutil.GenerateSigner(cfg.KeyType, cfg.Curve, cfg.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := RandomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := cfg.Clock()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Lanyard"}, CommonName: "Lanyard root " + cfg.TrustDomain},
		NotBefore:             now.Add(-IntermediateBackdate),
		NotAfter:              now.Add(cfg.TTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if cfg.TrustDomain != "" {
		u, err := url.Parse("spiffe://" + cfg.TrustDomain)
		if err != nil {
			return nil, nil, fmt.Errorf("root URI SAN: %w", err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	cert, err := x509util.CreateCertificate(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign root: %w", err)
	}
	return cert, key, nil
}

// MintX509CA signs the replica's intermediate with the root.
func (s *SelfSigned) MintX509CA(_ context.Context, req MintRequest) (*MintResponse, error) {
	cert, err := signIntermediate(req, s.cert, s.key, s.clock())
	if err != nil {
		return nil, err
	}
	return &MintResponse{CertChain: []*x509.Certificate{cert}, Roots: []*x509.Certificate{s.cert}}, nil
}

// Bundle returns the root.
func (s *SelfSigned) Bundle(context.Context) ([]*x509.Certificate, error) {
	return []*x509.Certificate{s.cert}, nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certs, err := pemutil.ReadCertificateBundle(certPath)
	if err != nil {
		if _, statErr := os.Stat(certPath); errors.Is(statErr, fs.ErrNotExist) {
			return nil, nil, statErr
		}
		return nil, nil, fmt.Errorf("read %s: %w", certPath, err)
	}
	k, err := pemutil.Read(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", keyPath, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: key of type %T cannot sign", keyPath, k)
	}
	if err := keyutil.VerifyPair(certs[0].PublicKey, key); err != nil {
		return nil, nil, fmt.Errorf("%s does not match %s: %w", keyPath, certPath, err)
	}
	return certs[0], key, nil
}

func writeKey(path string, key crypto.Signer) error {
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	return atomicfile.Write(path, pem.EncodeToMemory(block), 0o600)
}
