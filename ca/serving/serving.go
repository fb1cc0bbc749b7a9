package serving

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/lanyard-id/lanyard/ca"
)

// Config configures a serving certificate.
type Config struct {
	CA   *ca.CA
	Keys ca.KeySource
	// DNSNames and IPs go into the certificate beside
	// spiffe://<td>/lanyard/ca.
	DNSNames []string
	IPs      []net.IP
	// TTL of the certificate (default 24h).
	TTL time.Duration
	// Changed, when set, wakes Run at once (the bundle changed: a new
	// intermediate may be active).
	Changed func() <-chan struct{}
	// Check is how often Run checks whether a renewal is due (default 2s).
	Check  time.Duration
	Clock  func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
}

// Cert is the CA's TLS certificate. GetCertificate and Current are safe
// for concurrent use and never block.
type Cert struct {
	cfg Config

	cert  atomic.Pointer[tls.Certificate]
	keyID atomic.Pointer[string] // intermediate that signed cert
}

// New validates cfg and fills defaults. It issues nothing: call Renew
// (once the intermediate is ready) and Run.
func New(cfg Config) (*Cert, error) {
	if cfg.CA == nil || cfg.Keys == nil {
		return nil, errors.New("serving: CA and key source are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.Check == 0 {
		cfg.Check = 2 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Changed == nil {
		cfg.Changed = func() <-chan struct{} { return nil }
	}
	return &Cert{cfg: cfg}, nil
}

// Current is the certificate, nil before the first Renew.
func (s *Cert) Current() *tls.Certificate { return s.cert.Load() }

// GetCertificate is tls.Config.GetCertificate.
func (s *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return c, nil
}

// Run renews the certificate when it is due until ctx ends; it returns nil
// then.
func (s *Cert) Run(ctx context.Context) error {
	for {
		if s.due() {
			if err := s.Renew(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Error("renew serving certificate", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.After(s.cfg.Check):
		case <-s.cfg.Changed():
		}
	}
}

// due reports whether the certificate is missing, past half-life, or signed
// by an intermediate that is no longer active.
func (s *Cert) due() bool {
	c := s.cert.Load()
	if c == nil {
		return true
	}
	x, err := s.cfg.Keys.Current()
	if err != nil {
		return false
	}
	if k := s.keyID.Load(); k == nil || *k != x.KeyID {
		return true
	}
	half := c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
	return !s.cfg.Clock().Before(half)
}

// Renew issues a new certificate with a new key now.
func (s *Cert) Renew(ctx context.Context) error {
	x, err := s.cfg.Keys.Current()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	issued, err := s.cfg.CA.SignServing(ctx, key.Public(), s.cfg.DNSNames, s.cfg.IPs, s.cfg.TTL)
	if err != nil {
		return fmt.Errorf("sign serving certificate: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: issued.Leaf()}
	for _, c := range issued.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.cert.Store(tc)
	s.keyID.Store(&x.KeyID)
	return nil
}
