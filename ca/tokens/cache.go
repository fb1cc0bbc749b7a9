package tokens

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultCacheTTL is how long Cache keeps a positive result.
	DefaultCacheTTL = 30 * time.Second
	// DefaultCacheMaxEntries bounds the entries Cache keeps.
	DefaultCacheMaxEntries = 10000
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// TTL is how long a positive result is kept; never past the token's
	// expiry. Default 30s.
	TTL time.Duration
	// MaxEntries bounds the cache; when it is full, expired entries and
	// then arbitrary ones are evicted. Default 10000.
	MaxEntries int
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

// Stats counts a verifier's work since it was made.
type Stats struct {
	// Requests is the number of Verify calls.
	Requests uint64
	// CacheHits is the number answered from the positive cache.
	CacheHits uint64
	// Calls is the number that went to the wrapped verifier (Cache) or to
	// the TokenReview API (TokenReviewVerifier).
	Calls uint64
}

// cacheKey is SHA-256 of the token plus the audience it was verified for;
// the token itself is never kept.
type cacheKey struct {
	token    [sha256.Size]byte
	audience string
}

type cacheEntry struct {
	sa      *ServiceAccount
	expires time.Time
}

// Cache wraps a Verifier with a short positive cache: a token verified for
// an audience is accepted again without verification until TTL has passed
// or the token has expired, whichever comes first. Errors are not cached.
// It is safe for concurrent use.
type Cache struct {
	next       Verifier
	ttl        time.Duration
	maxEntries int
	clock      func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry

	requests, hits, calls atomic.Uint64
}

var _ Verifier = (*Cache)(nil)

// NewCache fills the defaults of cfg, validates it and wraps next.
func NewCache(next Verifier, cfg CacheConfig) (*Cache, error) {
	if next == nil {
		return nil, errors.New("token cache: verifier is required")
	}
	switch {
	case cfg.TTL < 0:
		return nil, fmt.Errorf("token cache: negative ttl %s", cfg.TTL)
	case cfg.TTL == 0:
		cfg.TTL = DefaultCacheTTL
	}
	switch {
	case cfg.MaxEntries < 0:
		return nil, fmt.Errorf("token cache: negative max entries %d", cfg.MaxEntries)
	case cfg.MaxEntries == 0:
		cfg.MaxEntries = DefaultCacheMaxEntries
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Cache{
		next:       next,
		ttl:        cfg.TTL,
		maxEntries: cfg.MaxEntries,
		clock:      cfg.Clock,
		entries:    make(map[cacheKey]cacheEntry),
	}, nil
}

// Verify answers from the cache or from the wrapped verifier. The result
// is a copy the caller may change.
func (c *Cache) Verify(ctx context.Context, token, audience string) (*ServiceAccount, error) {
	c.requests.Add(1)
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: token larger than %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	key := cacheKey{token: sha256.Sum256([]byte(token)), audience: audience}
	if sa := c.get(key); sa != nil {
		c.hits.Add(1)
		return sa, nil
	}
	c.calls.Add(1)
	sa, err := c.next.Verify(ctx, token, audience)
	if err != nil {
		return nil, err
	}
	c.put(key, sa)
	return copyServiceAccount(sa), nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	return Stats{Requests: c.requests.Load(), CacheHits: c.hits.Load(), Calls: c.calls.Load()}
}

// Len returns the number of entries, expired ones included.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *Cache) get(key cacheKey) *ServiceAccount {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return nil
	}
	return copyServiceAccount(e.sa)
}

func (c *Cache) put(key cacheKey, sa *ServiceAccount) {
	if sa.Expiry.IsZero() {
		return // no known expiry: never cache
	}
	now := c.clock()
	expires := now.Add(c.ttl)
	if sa.Expiry.Before(expires) {
		expires = sa.Expiry
	}
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.maxEntries {
		c.evictLocked(now)
	}
	c.entries[key] = cacheEntry{sa: copyServiceAccount(sa), expires: expires}
}

// evictLocked drops expired entries, then arbitrary ones (map order) until
// a sixteenth of the cache is free, so that a full cache is not swept on
// every insert.
func (c *Cache) evictLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	target := c.maxEntries - max(1, c.maxEntries/16)
	for k := range c.entries {
		if len(c.entries) <= target {
			return
		}
		delete(c.entries, k)
	}
}

func copyServiceAccount(sa *ServiceAccount) *ServiceAccount {
	out := *sa
	out.Audiences = slices.Clone(sa.Audiences)
	return &out
}
