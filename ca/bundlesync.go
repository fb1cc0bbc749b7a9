package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
)

// SharedBundle is the trust bundle that CA replicas keep in their shared
// store (storage/postgres implements it), so that every replica serves
// the same bundle with the same sequence.
type SharedBundle interface {
	// AddRoots adds to td's stored bundle the roots it lacks, drops roots
	// expired before now, and returns the stored roots and sequence.
	AddRoots(ctx context.Context, td string, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, int64, error)
	// LoadBundle returns td's stored roots and sequence (none and 0 when
	// nothing is stored yet).
	LoadBundle(ctx context.Context, td string) ([]*x509.Certificate, int64, error)
}

// publishRoots makes roots part of the bundle: with a shared bundle, adds
// them to the store and serves what it holds; else serves roots.
func (a *Authority) publishRoots(ctx context.Context, roots []*x509.Certificate) error {
	if a.cfg.Shared == nil {
		a.setRoots(roots)
		return nil
	}
	if len(roots) == 0 {
		return nil
	}
	stored, seq, err := a.cfg.Shared.AddRoots(ctx, a.cfg.TrustDomain.Name(), roots, a.cfg.Clock())
	if err != nil {
		return fmt.Errorf("publish trust bundle: %w", err)
	}
	a.adoptBundle(stored, seq)
	return nil
}

// adoptBundle serves the stored bundle when its sequence differs from the
// one served.
func (a *Authority) adoptBundle(roots []*x509.Certificate, seq int64) {
	if len(roots) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if seq == a.bundle.Sequence && sameCerts(a.bundle.Roots, roots) {
		return
	}
	a.bundle = &Bundle{TrustDomain: a.cfg.TrustDomain, Roots: roots, Sequence: seq}
	close(a.changed)
	a.changed = make(chan struct{})
	a.cfg.Logger.Info("trust bundle changed", "roots", len(roots), "sequence", seq, "source", "store")
}

// bundleHolds reports whether the served bundle holds every root.
func (a *Authority) bundleHolds(roots []*x509.Certificate) bool {
	b := a.Bundle()
	for _, r := range roots {
		found := false
		for _, have := range b.Roots {
			found = found || have.Equal(r)
		}
		if !found {
			return false
		}
	}
	return len(roots) > 0
}

// BundleSyncConfig configures a BundleSync.
type BundleSyncConfig struct {
	// Authority serves what the store holds. Its config must name Store as
	// Shared. Required.
	Authority *Authority
	// Store is the shared bundle. Required.
	Store SharedBundle
	// Watch, when set, calls onChange on every change any replica makes
	// (PostgreSQL LISTEN/NOTIFY) until ctx ends.
	Watch func(ctx context.Context, onChange func()) error
	// Interval is the periodic re-read, the fallback when notifications
	// are lost. Default 5s.
	Interval time.Duration
	// After waits as time.After does (the default).
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
}

// BundleSync keeps an Authority's bundle equal to the stored one: a
// change made by any replica reaches this replica's WatchBundle streams
// as soon as its notification arrives, and within Interval without one.
type BundleSync struct {
	cfg  BundleSyncConfig
	kick chan struct{}
}

// NewBundleSync validates cfg and fills its defaults.
func NewBundleSync(cfg BundleSyncConfig) (*BundleSync, error) {
	if cfg.Authority == nil || cfg.Store == nil {
		return nil, errors.New("bundle sync: authority and store are required")
	}
	if cfg.Interval < 0 {
		return nil, errors.New("bundle sync: negative interval")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BundleSync{cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Run re-reads the stored bundle on every notification and every Interval
// until ctx ends.
func (s *BundleSync) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if s.cfg.Watch != nil {
		g.Go(func() error { return s.cfg.Watch(ctx, s.notify) })
	}
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-s.kick:
			case <-s.cfg.After(s.cfg.Interval):
			}
			if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("read shared trust bundle", "error", err)
			}
		}
	})
	return g.Wait()
}

func (s *BundleSync) notify() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Sync reads the stored bundle once and serves it.
func (s *BundleSync) Sync(ctx context.Context) error {
	a := s.cfg.Authority
	roots, seq, err := s.cfg.Store.LoadBundle(ctx, a.cfg.TrustDomain.Name())
	if err != nil {
		return err
	}
	a.adoptBundle(roots, seq)
	return nil
}
