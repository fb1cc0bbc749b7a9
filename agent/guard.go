package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrTooManyPending: too many tokens the CA has not yet answered for are
// waiting for their first SVID; a new one is refused until some are
// answered. Served as codes.ResourceExhausted, which clients retry.
var ErrTooManyPending = errors.New("too many unverified tokens pending")

// Defaults of GuardConfig.
const (
	// DefaultMaxPendingTokens bounds the distinct tokens waiting for the
	// CA's first answer: a node runs at most a few hundred pods, and a
	// real pod's token waits for one batch (milliseconds).
	DefaultMaxPendingTokens = 256
	// DefaultRefusedTokenTTL is how long a token the CA refused is
	// refused by the agent itself, without asking the CA.
	DefaultRefusedTokenTTL = 30 * time.Second
	// DefaultMaxRememberedTokens bounds the refused tokens and the
	// accepted tokens the guard remembers (32 bytes of hash each).
	DefaultMaxRememberedTokens = 4096
)

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Next hands out the subscriptions (*Manager). Required.
	Next Identities
	// MaxPendingTokens bounds the distinct tokens whose first SVID the CA
	// has not answered yet. Default 256.
	MaxPendingTokens int
	// RefusedTokenTTL is how long a refused token is answered from the
	// negative cache. Default 30s.
	RefusedTokenTTL time.Duration
	// MaxRememberedTokens bounds the refused and the accepted tokens
	// remembered (each). Default 4096.
	MaxRememberedTokens int
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

// Guard sits in front of the SVID manager and bounds what callers who
// present bearer tokens can make the agent hold or ask of the CA. Anyone
// who can reach the socket can present any token, and the agent cannot
// verify one (only the CA can), so:
//
//   - a token the CA refused is refused again at once for RefusedTokenTTL
//     (a negative cache of SHA-256 hashes, bounded);
//   - at most MaxPendingTokens distinct tokens wait for the CA's first
//     answer; past that a new token gets ErrTooManyPending, while tokens
//     the CA has accepted and attested workloads pass untouched;
//   - the manager drops a refused token's entry as soon as its last
//     subscriber leaves, so forged tokens leave nothing behind.
//
// It is safe for concurrent use.
type Guard struct {
	cfg GuardConfig

	mu       sync.Mutex
	pending  map[tokenHash]int       // open subscriptions not yet answered
	refused  map[tokenHash]time.Time // until when
	accepted map[tokenHash]time.Time // last seen
}

type tokenHash [sha256.Size]byte

var _ Identities = (*Guard)(nil)

// NewGuard fills the defaults of cfg and validates it.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Next == nil {
		return nil, errors.New("guard: next is required")
	}
	if cfg.MaxPendingTokens < 0 || cfg.RefusedTokenTTL < 0 || cfg.MaxRememberedTokens < 0 {
		return nil, errors.New("guard: negative limit")
	}
	if cfg.MaxPendingTokens == 0 {
		cfg.MaxPendingTokens = DefaultMaxPendingTokens
	}
	if cfg.RefusedTokenTTL == 0 {
		cfg.RefusedTokenTTL = DefaultRefusedTokenTTL
	}
	if cfg.MaxRememberedTokens == 0 {
		cfg.MaxRememberedTokens = DefaultMaxRememberedTokens
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Guard{
		cfg: cfg, pending: map[tokenHash]int{},
		refused: map[tokenHash]time.Time{}, accepted: map[tokenHash]time.Time{},
	}, nil
}

// Subscribe passes w to the manager unless its token was refused recently
// or too many tokens are pending. Attested workloads pass untouched.
func (g *Guard) Subscribe(ctx context.Context, w Workload) (Subscription, error) {
	if w.Token == "" {
		return g.cfg.Next.Subscribe(ctx, w)
	}
	h := tokenHash(sha256.Sum256([]byte(w.Token)))
	now := g.cfg.Clock()
	g.mu.Lock()
	if until, ok := g.refused[h]; ok {
		if now.Before(until) {
			g.mu.Unlock()
			return nil, fmt.Errorf("%w: token refused by the CA moments ago", ErrDenied)
		}
		delete(g.refused, h)
	}
	_, known := g.accepted[h]
	_, waiting := g.pending[h]
	if !known && !waiting && len(g.pending) >= g.cfg.MaxPendingTokens {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: %d tokens wait for the CA", ErrTooManyPending, len(g.pending))
	}
	if known {
		g.accepted[h] = now
	} else {
		g.pending[h]++
	}
	g.mu.Unlock()
	sub, err := g.cfg.Next.Subscribe(ctx, w)
	if err != nil {
		if !known {
			g.settle(h, nil, err)
		}
		return nil, err
	}
	return &guardedSub{Subscription: sub, g: g, h: h, settled: known}, nil
}

// settle records the outcome of a pending subscription: accepted when svid
// is set, refused when err wraps ErrDenied, neither when both are nil (the
// subscription ended unanswered).
func (g *Guard) settle(h tokenHash, svid *x509svid.SVID, err error) {
	now := g.cfg.Clock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[h]--; g.pending[h] <= 0 {
		delete(g.pending, h)
	}
	switch {
	case svid != nil:
		remember(g.accepted, h, now, g.cfg.MaxRememberedTokens, time.Time{})
	case errors.Is(err, ErrDenied):
		remember(g.refused, h, now.Add(g.cfg.RefusedTokenTTL), g.cfg.MaxRememberedTokens, now)
	}
}

// remember sets m[h] = v, first making room when m is full: entries whose
// value is before expired (when not zero) go, then the oldest values.
func remember(m map[tokenHash]time.Time, h tokenHash, v time.Time, limit int, expired time.Time) {
	if _, ok := m[h]; !ok && len(m) >= limit {
		if !expired.IsZero() {
			for k, t := range m {
				if !t.After(expired) {
					delete(m, k)
				}
			}
		}
		for len(m) >= limit {
			var oldest tokenHash
			var at time.Time
			first := true
			for k, t := range m {
				if first || t.Before(at) {
					oldest, at, first = k, t, false
				}
			}
			delete(m, oldest)
		}
	}
	m[h] = v
}

// guardedSub reports the first answer for its token to the guard.
type guardedSub struct {
	Subscription
	g *Guard
	h tokenHash

	mu      sync.Mutex
	settled bool
}

func (s *guardedSub) SVID() (*x509svid.SVID, error) {
	svid, err := s.Subscription.SVID()
	if svid != nil || err != nil {
		s.settle(svid, err)
	}
	return svid, err
}

func (s *guardedSub) Close() {
	s.settle(nil, nil)
	s.Subscription.Close()
}

func (s *guardedSub) settle(svid *x509svid.SVID, err error) {
	s.mu.Lock()
	done := s.settled
	s.settled = true
	s.mu.Unlock()
	if !done {
		s.g.settle(s.h, svid, err)
	}
}
