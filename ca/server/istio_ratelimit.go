package server

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket per key (a SPIFFE ID), holding at most max
// buckets: when full, the least recently used bucket is forgotten, which
// at worst gives that key a fresh, full bucket. A nil *rateLimiter allows
// everything.
type rateLimiter struct {
	limit rate.Limit
	burst int
	max   int
	clock func() time.Time

	mu      sync.Mutex
	lru     *list.List // of *bucket, most recently used first
	buckets map[string]*list.Element
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newRateLimiter(perSecond float64, burst, maxKeys int, clock func() time.Time) *rateLimiter {
	return &rateLimiter{
		limit: rate.Limit(perSecond), burst: burst, max: maxKeys, clock: clock,
		lru: list.New(), buckets: make(map[string]*list.Element),
	}
}

// allow takes a token from key's bucket and reports whether there was one.
func (r *rateLimiter) allow(key string) bool { return r.allowN(key, 1) }

// allowN takes n tokens from key's bucket and reports whether there were
// n.
func (r *rateLimiter) allowN(key string, n int) bool {
	if r == nil {
		return true
	}
	now := r.clock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.buckets[key]; ok {
		r.lru.MoveToFront(e)
		return e.Value.(*bucket).lim.AllowN(now, n)
	}
	for r.lru.Len() >= r.max {
		oldest := r.lru.Back()
		r.lru.Remove(oldest)
		delete(r.buckets, oldest.Value.(*bucket).key)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(r.limit, r.burst)}
	r.buckets[key] = r.lru.PushFront(b)
	return b.lim.AllowN(now, n)
}

// len is the number of keys tracked.
func (r *rateLimiter) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lru.Len()
}
