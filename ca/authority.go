package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/keyutil"

	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/internal/backoff"
)

// X509CA is one replica's signing intermediate.
type X509CA struct {
	// Certificate is the intermediate that signs leaves.
	Certificate *x509.Certificate
	// Signer is its private key; it never leaves the replica.
	Signer crypto.Signer
	// Chain is Certificate followed by any upstream intermediates, up to
	// but excluding the root: what follows a leaf in an SVID chain.
	Chain []*x509.Certificate
	// KeyID is the hex subject key id of Certificate.
	KeyID string
}

// Bundle is the trust bundle of the CA's trust domain.
type Bundle struct {
	TrustDomain spiffeid.TrustDomain
	Roots       []*x509.Certificate
	// Sequence grows by one with every change.
	Sequence int64
}

// AuthorityConfig configures the intermediate lifecycle.
type AuthorityConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Upstream signs the intermediates. Required.
	Upstream upstream.Authority
	// TTL of an intermediate, default 24h; renewed at half-life.
	TTL time.Duration
	// Key type of the intermediate key: "EC" "P-256" (default), "EC"
	// "P-384", "RSA" with KeySize, "OKP" "Ed25519".
	KeyType  string
	KeyCurve string
	KeySize  int
	// Name identifies this replica in the intermediate's common name
	// (default: the host name).
	Name string
	// BundleRefresh is how often the roots are re-read from upstream
	// (default 1m).
	BundleRefresh time.Duration
	Clock         func() time.Time
	// After waits for a duration as time.After does (the default); tests
	// inject a fake together with Clock to drive Run without sleeping.
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// OnRotate, when set, is called after each new intermediate is active.
	OnRotate func(*X509CA)
	// Shared, when set, is the trust bundle replicas keep in their shared
	// store: the upstream's roots are added to it, and the bundle served is
	// the stored one (see BundleSync). Nil: the upstream's roots alone.
	Shared SharedBundle
}

// Authority keeps this replica's intermediate fresh and publishes the trust
// bundle. Current and Bundle are safe for concurrent use and never block.
type Authority struct {
	cfg     AuthorityConfig
	current atomic.Pointer[X509CA]

	// lastMint is the Unix time of the last intermediate minted (0: none);
	// mintFailures counts failed mints since start.
	lastMint, mintFailures atomic.Int64

	mu      sync.Mutex
	bundle  *Bundle
	changed chan struct{} // closed and replaced on every bundle change
}

// NewAuthority validates cfg. Call Prepare (or Run) to mint the first
// intermediate.
func NewAuthority(cfg AuthorityConfig) (*Authority, error) {
	if cfg.Upstream == nil {
		return nil, errors.New("authority: upstream is required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("authority: trust domain is required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.TTL < time.Minute {
		return nil, fmt.Errorf("authority: intermediate TTL %s is under a minute", cfg.TTL)
	}
	if cfg.KeyType == "" {
		cfg.KeyType, cfg.KeyCurve = "EC", "P-256"
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.BundleRefresh == 0 {
		cfg.BundleRefresh = time.Minute
	}
	if cfg.BundleRefresh < 0 {
		return nil, fmt.Errorf("authority: negative bundle refresh interval %s", cfg.BundleRefresh)
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
	return &Authority{cfg: cfg, bundle: &Bundle{TrustDomain: cfg.TrustDomain}, changed: make(chan struct{})}, nil
}

// Current returns the active intermediate, or ErrNotReady when there is none
// or it has expired.
func (a *Authority) Current() (*X509CA, error) {
	x := a.current.Load()
	if x == nil {
		return nil, fmt.Errorf("%w: no intermediate yet", ErrNotReady)
	}
	if !a.cfg.Clock().Before(x.Certificate.NotAfter) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrNotReady, x.Certificate.NotAfter)
	}
	return x, nil
}

// Bundle returns the current trust bundle.
func (a *Authority) Bundle() *Bundle {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundle
}

// BundleChanged returns a channel closed at the next bundle change; read
// Bundle again after it closes and ask for a new channel.
func (a *Authority) BundleChanged() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// Prepare mints the first intermediate and loads the bundle.
func (a *Authority) Prepare(ctx context.Context) error {
	if err := a.refreshBundle(ctx); err != nil {
		return err
	}
	return a.rotate(ctx)
}

// Run renews the intermediate at half-life (retrying with backoff on
// failure) and refreshes the bundle every BundleRefresh, until ctx is done.
//
// Both deadlines are absolute times on the Clock, so a bundle refresh never
// postpones a renewal or a retry.
func (a *Authority) Run(ctx context.Context) error {
	failures := 0
	// earliest spaces renewals out: near the root's expiry a new
	// intermediate is already past its half-life when it is minted.
	var retryAt, earliest time.Time
	nextBundle := a.cfg.Clock().Add(a.cfg.BundleRefresh)
	for {
		renewAt := a.renewalTime()
		if renewAt.Before(earliest) {
			renewAt = earliest
		}
		if failures > 0 {
			renewAt = retryAt
		}
		now := a.cfg.Clock()
		wait := max(min(renewAt.Sub(now), nextBundle.Sub(now)), 0)
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.After(wait):
		}
		now = a.cfg.Clock()
		if !now.Before(nextBundle) {
			if err := a.refreshBundle(ctx); err != nil {
				a.cfg.Logger.Warn("refresh trust bundle", "error", err)
			}
			nextBundle = now.Add(a.cfg.BundleRefresh)
		}
		if now.Before(renewAt) {
			continue
		}
		if err := a.rotate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			retryAt = now.Add(backoff.Exponential(failures, 500*time.Millisecond, time.Minute))
			a.cfg.Logger.Error("renew intermediate", "error", err, "failures", failures)
			continue
		}
		failures = 0
		earliest = now.Add(minRenewInterval)
	}
}

// minRenewInterval is the least time between two successful renewals.
const minRenewInterval = 10 * time.Second

// renewalTime is the active intermediate's half-life, or the zero time
// (renew now) when there is none.
func (a *Authority) renewalTime() time.Time {
	x := a.current.Load()
	if x == nil {
		return time.Time{}
	}
	c := x.Certificate
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// rotate mints a new intermediate and counts the outcome for UpstreamStats.
func (a *Authority) rotate(ctx context.Context) error {
	if err := a.mint(ctx); err != nil {
		a.mintFailures.Add(1)
		return err
	}
	a.lastMint.Store(a.cfg.Clock().Unix())
	return nil
}

func (a *Authority) mint(ctx context.Context) error {
	key, err := keyutil.GenerateSigner(a.cfg.KeyType, a.cfg.KeyCurve, a.cfg.KeySize)
	if err != nil {
		return fmt.Errorf("generate intermediate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("intermediate CSR: %w", err)
	}
	resp, err := a.cfg.Upstream.MintX509CA(ctx, upstream.MintRequest{
		CSR:        csr,
		TTL:        a.cfg.TTL,
		URISAN:     a.cfg.TrustDomain.IDString(),
		CommonName: "Lanyard intermediate " + a.cfg.Name,
	})
	if err != nil {
		return fmt.Errorf("mint intermediate: %w", err)
	}
	if len(resp.CertChain) == 0 {
		return errors.New("mint intermediate: upstream returned no certificate")
	}
	cert := resp.CertChain[0]
	if err := keyutil.VerifyPair(cert.PublicKey, key); err != nil {
		return fmt.Errorf("mint intermediate: upstream certificate does not match our key: %w", err)
	}
	if err := verifyIntermediate(resp, a.cfg.Clock()); err != nil {
		return err
	}
	x := &X509CA{Certificate: cert, Signer: key, Chain: resp.CertChain, KeyID: hex.EncodeToString(cert.SubjectKeyId)}
	if err := a.publishRoots(ctx, resp.Roots); err != nil && !a.bundleHolds(resp.Roots) {
		// Leaves under a root the bundle lacks would not verify anywhere.
		return err
	}
	a.current.Store(x)
	a.cfg.Logger.Info("intermediate active", "key_id", x.KeyID, "not_after", cert.NotAfter)
	if a.cfg.OnRotate != nil {
		a.cfg.OnRotate(x)
	}
	return nil
}

// verifyIntermediate checks the minted chain reaches one of the roots, so a
// misconfigured upstream is caught before a leaf is signed.
func verifyIntermediate(resp *upstream.MintResponse, now time.Time) error {
	roots := x509.NewCertPool()
	for _, r := range resp.Roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range resp.CertChain[1:] {
		inter.AddCert(c)
	}
	if _, err := resp.CertChain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("mint intermediate: chain does not verify to the bundle: %w", err)
	}
	return nil
}

func (a *Authority) refreshBundle(ctx context.Context) error {
	roots, err := a.cfg.Upstream.Bundle(ctx)
	if err != nil {
		return fmt.Errorf("read trust bundle: %w", err)
	}
	return a.publishRoots(ctx, roots)
}

// setRoots publishes roots as the bundle when they differ from the current.
func (a *Authority) setRoots(roots []*x509.Certificate) {
	if len(roots) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if sameCerts(a.bundle.Roots, roots) {
		return
	}
	a.bundle = &Bundle{TrustDomain: a.cfg.TrustDomain, Roots: roots, Sequence: a.bundle.Sequence + 1}
	close(a.changed)
	a.changed = make(chan struct{})
	a.cfg.Logger.Info("trust bundle changed", "roots", len(roots), "sequence", a.bundle.Sequence)
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
