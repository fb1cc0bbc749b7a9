package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Pruner is a Store that deletes expired certificate records. Both stores
// implement it; audit events are never pruned.
type Pruner interface {
	// PruneCertificates deletes at most limit certificate records whose
	// NotAfter is before before, in one short transaction, and returns how
	// many it deleted. A store shared by replicas lets one replica prune at
	// a time: the others get 0 and nil.
	PruneCertificates(ctx context.Context, before time.Time, limit int) (int, error)
}

// Retention defaults.
const (
	DefaultRetention      = 30 * 24 * time.Hour
	DefaultPruneInterval  = 10 * time.Minute
	DefaultPruneBatchSize = 500
	DefaultPrunePause     = 100 * time.Millisecond
)

// RetentionConfig configures a Retention.
type RetentionConfig struct {
	// Store is pruned. Required.
	Store Pruner
	// Keep is how long a certificate record is kept past its NotAfter.
	// Default DefaultRetention (30 days).
	Keep time.Duration
	// Interval between pruning rounds. Default DefaultPruneInterval.
	Interval time.Duration
	// BatchSize bounds the records one transaction deletes, so issuance
	// never waits long behind it. Default DefaultPruneBatchSize.
	BatchSize int
	// Pause between two batches of a round. Default DefaultPrunePause.
	Pause time.Duration
	// Clock and After: see ca.AuthorityConfig. Defaults time.Now and
	// time.After.
	Clock  func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// OnPrune, when set, is called with the records each batch deleted
	// (for the rows-pruned metric).
	OnPrune func(n int)
}

// Retention deletes expired certificate records in small batches.
type Retention struct{ cfg RetentionConfig }

// NewRetention validates cfg and fills its defaults.
func NewRetention(cfg RetentionConfig) (*Retention, error) {
	if cfg.Store == nil {
		return nil, errors.New("retention: nil Store")
	}
	if cfg.Keep < 0 || cfg.Interval < 0 || cfg.BatchSize < 0 || cfg.Pause < 0 {
		return nil, errors.New("retention: negative duration or batch size")
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultRetention
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultPruneInterval
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultPruneBatchSize
	}
	if cfg.Pause == 0 {
		cfg.Pause = DefaultPrunePause
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
	return &Retention{cfg: cfg}, nil
}

// Run prunes once at start and then every Interval until ctx ends. Store
// errors are logged and retried at the next round.
func (r *Retention) Run(ctx context.Context) error {
	for {
		if n, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("prune expired certificates", "error", err, "deleted", n)
		} else if n > 0 {
			r.cfg.Logger.Info("pruned expired certificates", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.After(r.cfg.Interval):
		}
	}
}

// Prune runs one round: batches until one deletes fewer than BatchSize.
// It returns the records deleted.
func (r *Retention) Prune(ctx context.Context) (int, error) {
	before := r.cfg.Clock().Add(-r.cfg.Keep)
	total := 0
	for {
		n, err := r.cfg.Store.PruneCertificates(ctx, before, r.cfg.BatchSize)
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		total += n
		if n > 0 && r.cfg.OnPrune != nil {
			r.cfg.OnPrune(n)
		}
		if n < r.cfg.BatchSize {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-r.cfg.After(r.cfg.Pause):
		}
	}
}
