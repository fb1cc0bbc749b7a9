package tokens

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Files a DevIssuer keeps in its directory.
const (
	DevIssuerKeyFile  = "dev-issuer-key.pem"
	DevIssuerJWKSFile = "dev-issuer-jwks.json"
)

// DefaultDevTokenTTL is the lifetime of a minted token unless DevClaims
// says otherwise (Kubernetes' default for projected tokens).
const DefaultDevTokenTTL = time.Hour

const devKeyBits = 2048

// DevIssuer is a DEVELOPMENT-ONLY service-account token issuer: it mints
// tokens in the exact format of Kubernetes projected service-account
// tokens, signed with a key kept in a local file, so that Lanyard can run
// and be tested without a cluster. Anyone who can read its key file can
// mint any identity. NEVER configure a production CA to trust its key set.
type DevIssuer struct {
	issuer   string
	kid      string
	signer   jose.Signer
	jwks     []byte
	jwksPath string
}

// DevOption configures LoadOrCreateDevIssuer.
type DevOption func(*devOptions)

type devOptions struct {
	log *slog.Logger
}

// WithDevLogger makes LoadOrCreateDevIssuer log its loud warning (and the
// key it uses) to log. Without it nothing is logged.
func WithDevLogger(log *slog.Logger) DevOption {
	return func(o *devOptions) { o.log = log }
}

// LoadOrCreateDevIssuer loads the DEVELOPMENT-ONLY issuer key from
// dir/dev-issuer-key.pem, creating dir (0700) and an RSA-2048 key (0600)
// when missing, and writes the matching key set to
// dir/dev-issuer-jwks.json. The key id is computed as Kubernetes does:
// unpadded base64url of SHA-256 of the PKIX DER public key.
func LoadOrCreateDevIssuer(dir, issuer string, opts ...DevOption) (*DevIssuer, error) {
	o := devOptions{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, errors.New("dev issuer: dir is required")
	}
	if issuer == "" {
		return nil, errors.New("dev issuer: issuer is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	keyPath := filepath.Join(dir, DevIssuerKeyFile)
	key, created, err := loadOrCreateDevKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
		o.log.Warn("dev issuer key file is readable by others", "path", keyPath, "mode", fi.Mode().Perm().String())
	}
	kid, err := kubernetesKeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig",
	}}})
	if err != nil {
		return nil, fmt.Errorf("dev issuer: marshal jwks: %w", err)
	}
	jwksPath := filepath.Join(dir, DevIssuerJWKSFile)
	if err := writeFileAtomic(jwksPath, jwks, 0o644); err != nil {
		return nil, fmt.Errorf("dev issuer: write jwks: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.RS256,
		Key:       jose.JSONWebKey{Key: key, KeyID: kid},
	}, nil) // no options: no typ header, like Kubernetes
	if err != nil {
		return nil, fmt.Errorf("dev issuer: signer: %w", err)
	}
	o.log.Warn("DEVELOPMENT-ONLY token issuer in use: anyone with its key file can mint any identity; never use in production",
		"issuer", issuer, "kid", kid, "key_file", keyPath, "key_created", created, "jwks_file", jwksPath)
	return &DevIssuer{issuer: issuer, kid: kid, signer: signer, jwks: jwks, jwksPath: jwksPath}, nil
}

// Issuer returns the iss claim of minted tokens.
func (d *DevIssuer) Issuer() string { return d.issuer }

// JWKSPath returns the path of the key set file (for JWKSConfig.JWKSFile).
func (d *DevIssuer) JWKSPath() string { return d.jwksPath }

// JWKS returns the key set document (for JWKSConfig.JWKS).
func (d *DevIssuer) JWKS() []byte { return append([]byte(nil), d.jwks...) }

// KeyID returns the kid of the signing key.
func (d *DevIssuer) KeyID() string { return d.kid }

// kubernetesKeyID computes a key id the way the Kubernetes API server does.
func kubernetesKeyID(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// loadOrCreateDevKey loads the key at path, or creates it when missing.
// Two processes racing to create it end up with the same key.
func loadOrCreateDevKey(path string) (*rsa.PrivateKey, bool, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		key, err := parseDevKey(raw)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read key: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, devKeyBits)
	if err != nil {
		return nil, false, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("marshal key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	created, err := createFileExclusive(path, data)
	if err != nil {
		return nil, false, fmt.Errorf("write key: %w", err)
	}
	if !created { // someone else won the race: use their key
		return loadOrCreateDevKey(path)
	}
	return key, true, nil
}

func parseDevKey(raw []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want RSA", key)
	}
	if rk.N.BitLen() < devKeyBits {
		return nil, fmt.Errorf("rsa key has %d bits, want at least %d", rk.N.BitLen(), devKeyBits)
	}
	return rk, nil
}

// createFileExclusive writes data to a temporary file (0600) and links it
// to path, so that path never holds a partial file. It reports false when
// path already exists.
func createFileExclusive(path string, data []byte) (bool, error) {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// writeFileAtomic replaces path with data.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeTemp writes data to a new 0600 file beside path and returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", werr
	}
	return f.Name(), nil
}
