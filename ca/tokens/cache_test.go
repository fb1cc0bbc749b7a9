package tokens

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestCache(t *testing.T, next Verifier, cfg CacheConfig) *Cache {
	t.Helper()
	c, err := NewCache(next, cfg)
	require.NoError(t, err)
	return c
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	for _, tt := range []struct {
		name      string
		expiry    time.Duration // token exp from now; 0 means unknown
		advance   time.Duration // before the second call
		wantCalls int64
	}{
		{name: "hit", expiry: time.Hour, advance: DefaultCacheTTL - time.Second, wantCalls: 1},
		{name: "ttl passed", expiry: time.Hour, advance: DefaultCacheTTL, wantCalls: 2},
		{name: "bounded by exp", expiry: 5 * time.Second, advance: 5 * time.Second, wantCalls: 2},
		{name: "before exp", expiry: 5 * time.Second, advance: 4 * time.Second, wantCalls: 1},
		{name: "unknown exp is never cached", wantCalls: 2},
		{name: "already expired is never cached", expiry: -time.Second, wantCalls: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			next := &countingVerifier{sa: ServiceAccount{Cluster: testCluster, Namespace: "default", Name: "web"}}
			if tt.expiry != 0 {
				next.sa.Expiry = clock.Now().Add(tt.expiry)
			}
			c := newTestCache(t, next, CacheConfig{Clock: clock.Now})
			_, err := c.Verify(ctx, "tok", testAudience)
			require.NoError(t, err)
			clock.Advance(tt.advance)
			sa, err := c.Verify(ctx, "tok", testAudience)
			require.NoError(t, err)
			require.Equal(t, "web", sa.Name)
			require.Equal(t, tt.wantCalls, next.calls.Load())
			require.Equal(t, Stats{Requests: 2, CacheHits: uint64(2 - tt.wantCalls), Calls: uint64(tt.wantCalls)}, c.Stats())
		})
	}
}

func TestCacheKeys(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	next := &countingVerifier{sa: ServiceAccount{Name: "web", Expiry: clock.Now().Add(time.Hour)}}
	c := newTestCache(t, next, CacheConfig{Clock: clock.Now})

	for _, call := range []struct{ token, audience string }{
		{"tok-1", "lanyard"}, {"tok-1", "istio-ca"}, {"tok-2", "lanyard"}, {"tok-1", "lanyard"}, {"tok-1", "istio-ca"},
	} {
		sa, err := c.Verify(ctx, call.token, call.audience)
		require.NoError(t, err)
		require.Equal(t, []string{call.audience}, sa.Audiences)
	}
	require.EqualValues(t, 3, next.calls.Load(), "keyed by token and audience")
}

func TestCacheDoesNotCacheErrors(t *testing.T) {
	next := &countingVerifier{err: fmt.Errorf("%w: test", ErrInvalidToken)}
	c := newTestCache(t, next, CacheConfig{})
	for range 2 {
		_, err := c.Verify(context.Background(), "tok", testAudience)
		require.ErrorIs(t, err, ErrInvalidToken)
	}
	require.EqualValues(t, 2, next.calls.Load())
	require.Zero(t, c.Len())
}

func TestCacheReturnsCopies(t *testing.T) {
	clock := newFakeClock()
	next := &countingVerifier{sa: ServiceAccount{Name: "web", Expiry: clock.Now().Add(time.Hour)}}
	c := newTestCache(t, next, CacheConfig{Clock: clock.Now})
	sa, err := c.Verify(context.Background(), "tok", testAudience)
	require.NoError(t, err)
	sa.Name = "admin"
	sa.Audiences[0] = "other"
	sa, err = c.Verify(context.Background(), "tok", testAudience)
	require.NoError(t, err)
	require.Equal(t, "web", sa.Name)
	require.Equal(t, []string{testAudience}, sa.Audiences)
}

func TestCacheEviction(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	next := &countingVerifier{sa: ServiceAccount{Name: "web", Expiry: clock.Now().Add(time.Hour)}}
	c := newTestCache(t, next, CacheConfig{Clock: clock.Now, MaxEntries: 32})
	for i := range 100 {
		_, err := c.Verify(ctx, fmt.Sprint("tok-", i), testAudience)
		require.NoError(t, err)
		require.LessOrEqual(t, c.Len(), 32)
	}

	// Expired entries go first.
	clock.Advance(DefaultCacheTTL)
	_, err := c.Verify(ctx, "fresh", testAudience)
	require.NoError(t, err)
	require.Equal(t, 1, c.Len())
}

func TestCacheRejectsOversizeTokens(t *testing.T) {
	next := &countingVerifier{}
	c := newTestCache(t, next, CacheConfig{})
	_, err := c.Verify(context.Background(), strings.Repeat("a", MaxTokenSize+1), testAudience)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.Zero(t, next.calls.Load())
}

func TestNewCacheConfig(t *testing.T) {
	for _, tt := range []struct {
		name    string
		next    Verifier
		cfg     CacheConfig
		wantErr string
	}{
		{name: "defaults", next: &countingVerifier{}},
		{name: "no verifier", wantErr: "verifier is required"},
		{name: "negative ttl", next: &countingVerifier{}, cfg: CacheConfig{TTL: -1}, wantErr: "ttl"},
		{name: "negative max entries", next: &countingVerifier{}, cfg: CacheConfig{MaxEntries: -1}, wantErr: "max entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCache(tt.next, tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, DefaultCacheTTL, c.ttl)
			require.Equal(t, DefaultCacheMaxEntries, c.maxEntries)
		})
	}
}

func TestCacheWithJWKSVerifier(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	v := staticVerifier(t, clock)
	c := newTestCache(t, v, CacheConfig{Clock: clock.Now})
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()).with("exp", clock.Now().Add(10*time.Second).Unix()))

	for range 2 {
		sa, err := c.Verify(ctx, tok, testAudience)
		require.NoError(t, err)
		require.Equal(t, "web", sa.Name)
	}
	require.Equal(t, Stats{Requests: 2, CacheHits: 1, Calls: 1}, c.Stats())

	_, err := c.Verify(ctx, tok, "istio-ca")
	require.NoError(t, err, "the token names istio-ca too")
	_, err = c.Verify(ctx, tok, "other")
	require.ErrorIs(t, err, ErrWrongAudience, "a cached token is not accepted for another audience")

	// Past exp the cache answers no more: the verifier decides (it still
	// allows its leeway), and the result is not cached.
	clock.Advance(11 * time.Second)
	calls := c.Stats().Calls
	for range 2 {
		_, err = c.Verify(ctx, tok, testAudience)
		require.NoError(t, err)
	}
	require.Equal(t, calls+2, c.Stats().Calls)
	clock.Advance(time.Minute)
	_, err = c.Verify(ctx, tok, testAudience)
	require.ErrorIs(t, err, ErrExpired)
}
