package upstream

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.step.sm/crypto/keyutil"
)

// RootStore keeps the one self-signed root that every replica of a trust
// domain shares (storage/postgres implements it).
type RootStore interface {
	// LoadOrCreateRoot returns td's root certificate (DER) and sealed key;
	// when there is none it calls create, under a lock that replicas
	// share, and stores what create returns.
	LoadOrCreateRoot(ctx context.Context, td string, create func() (certDER, sealedKey []byte, err error)) (certDER, sealedKey []byte, err error)
}

// SharedSelfSignedConfig configures a self-signed root shared by replicas
// through their store.
type SharedSelfSignedConfig struct {
	// Store holds the root. Required.
	Store RootStore
	// SealKeyFile holds the 32-byte AES-256 key (raw, or base64 text) that
	// seals the root's private key in the store; every replica mounts the
	// same file (a Kubernetes Secret). Required.
	SealKeyFile string
	// TrustDomain, TTL, KeyType, Curve, Size, Clock and Logger: as in
	// SelfSignedConfig.
	TrustDomain string
	TTL         time.Duration
	KeyType     string
	Curve       string
	Size        int
	Clock       func() time.Time
	Logger      *slog.Logger
}

// NewSharedSelfSigned loads the trust domain's shared root from the store,
// or, on the very first start of any replica, generates it and stores it
// with its key sealed (AES-256-GCM, bound to the trust domain and the
// certificate). Replicas so sign their intermediates with one root and
// serve one trust bundle.
func NewSharedSelfSigned(ctx context.Context, cfg SharedSelfSignedConfig) (*SelfSigned, error) {
	if cfg.Store == nil || cfg.SealKeyFile == "" {
		return nil, errors.New("shared selfsigned: store and seal key file are required")
	}
	sc := SelfSignedConfig{TrustDomain: cfg.TrustDomain, TTL: cfg.TTL, KeyType: cfg.KeyType, Curve: cfg.Curve,
		Size: cfg.Size, Clock: cfg.Clock, Logger: cfg.Logger}
	sc.fill()
	aead, err := loadSealKey(cfg.SealKeyFile)
	if err != nil {
		return nil, err
	}
	created := false
	certDER, sealed, err := cfg.Store.LoadOrCreateRoot(ctx, cfg.TrustDomain, func() ([]byte, []byte, error) {
		cert, key, err := generateRoot(sc)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, fmt.Errorf("encode root key: %w", err)
		}
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, nil, err
		}
		created = true
		return cert.Raw, aead.Seal(nonce, nonce, der, sealAAD(cfg.TrustDomain, cert.Raw)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("shared selfsigned: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("shared selfsigned: stored root: %w", err)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("shared selfsigned: stored root key is truncated")
	}
	der, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], sealAAD(cfg.TrustDomain, certDER))
	if err != nil {
		return nil, errors.New("shared selfsigned: cannot unseal the stored root key: wrong seal key file?")
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("shared selfsigned: stored root key: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("shared selfsigned: root key of type %T cannot sign", k)
	}
	if err := keyutil.VerifyPair(cert.PublicKey, key); err != nil {
		return nil, fmt.Errorf("shared selfsigned: stored key does not match the root: %w", err)
	}
	msg := "loaded shared self-signed root"
	if created {
		msg = "generated shared self-signed root"
	}
	sc.Logger.Info(msg, "subject", cert.Subject.String(), "not_after", cert.NotAfter)
	return &SelfSigned{cert: cert, key: key, clock: sc.Clock}, nil
}

func sealAAD(td string, certDER []byte) []byte {
	h := sha256.Sum256(certDER)
	return append([]byte("lanyard shared root\x00"+td+"\x00"), h[:]...)
}

// loadSealKey reads a 32-byte key, raw or base64 (standard or URL, padded
// or not), and returns its AES-256-GCM.
func loadSealKey(path string) (cipher.AEAD, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shared selfsigned: seal key: %w", err)
	}
	key := b
	if len(b) != 32 {
		text := strings.TrimSpace(string(b))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(text); err == nil {
				key = d
				break
			}
		}
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("shared selfsigned: seal key %s: want 32 bytes (raw or base64), got %d", path, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
