package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/clocktest"

	"github.com/stretchr/testify/require"
)

func TestRateLimiter(t *testing.T) {
	clock := clocktest.New(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRateLimiter(2, 3, 1000, clock.Now)
	for i := range 3 {
		require.True(t, r.allow("a"), "burst %d", i)
	}
	require.False(t, r.allow("a"), "over the burst")
	require.True(t, r.allow("b"), "another key has its own bucket")
	clock.Advance(500 * time.Millisecond)
	require.True(t, r.allow("a"), "one token back after 1/rate")
	require.False(t, r.allow("a"))
	clock.Advance(time.Hour)
	for i := range 3 {
		require.True(t, r.allow("a"), "refilled to the burst, not beyond: %d", i)
	}
	require.False(t, r.allow("a"))
}

func TestRateLimiterBoundedMemory(t *testing.T) {
	clock := clocktest.New(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRateLimiter(1e-9, 1, 100, clock.Now)
	require.True(t, r.allow("hot"))
	for i := range 10_000 {
		r.allow(fmt.Sprintf("spiffe://cluster.local/ns/n/sa/%d", i))
		if i%50 == 0 {
			require.False(t, r.allow("hot"), "a recently used key is kept (%d)", i)
		}
		require.LessOrEqual(t, r.len(), 100)
	}
	require.Equal(t, 100, r.len())
}

func TestRateLimiterNilAllows(t *testing.T) {
	var r *rateLimiter
	require.True(t, r.allow("x"))
}

func TestRateLimiterConcurrent(t *testing.T) {
	r := newRateLimiter(1e-9, 50, 10, time.Now)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if r.allow("k") {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, 50, allowed)
}
