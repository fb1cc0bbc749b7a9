package tokens

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stalledServer accepts requests and never answers them, until the client
// gives up or the test ends.
type stalledServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newStalledServer(t *testing.T) *stalledServer {
	t.Helper()
	s := &stalledServer{}
	release := make(chan struct{})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); s.Close() })
	return s
}

func TestJWKSStalledEndpointDoesNotPileUp(t *testing.T) {
	clock := newFakeClock()
	stalled := newStalledServer(t)
	v, err := NewJWKSVerifier(JWKSConfig{
		Cluster: testCluster, Issuer: testIssuer, JWKSURL: stalled.URL,
		FetchTimeout: 100 * time.Millisecond, Clock: clock.Now, Logger: discardLogger(),
	})
	require.NoError(t, err)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	// The first wave waits for the one fetch, which times out.
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tok, testAudience) })
	}
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, ErrUnavailable)
	}
	require.EqualValues(t, 1, stalled.hits.Load(), "one fetch in flight for all callers")
	require.ErrorContains(t, errs[0], "no answer within 100ms")

	// While the endpoint is known to fail, callers are answered from the
	// negative cache: no wait, no fetch.
	for range 100 {
		_, err := v.Verify(context.Background(), tok, testAudience)
		require.ErrorIs(t, err, ErrUnavailable)
	}
	require.EqualValues(t, 1, stalled.hits.Load())

	// After the negative cache, a caller starts the retry but does not
	// wait for it: a caller whose context is already done is still
	// answered Unavailable by the negative cache, not by its context.
	clock.Advance(DefaultMinRefetchInterval)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = v.Verify(ctx, tok, testAudience)
	require.ErrorIs(t, err, ErrUnavailable)
	require.NotErrorIs(t, err, context.Canceled)
	v.keys.idle()
	require.EqualValues(t, 2, stalled.hits.Load(), "retried in the background")
}

func TestClustersStalledClusterDoesNotSlowOthers(t *testing.T) {
	clock := newFakeClock()
	stalled := newStalledServer(t)
	good := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	slow, err := NewJWKSVerifier(JWKSConfig{
		Cluster: "a", Issuer: testIssuer, JWKSURL: stalled.URL,
		FetchTimeout: MaxFetchTimeout, Clock: clock.Now, Logger: discardLogger(),
	})
	require.NoError(t, err)
	fast := urlVerifier(t, clock, good.Server, good.URL)
	cl, err := NewClusters("", map[string]Verifier{"a": slow, "b": fast})
	require.NoError(t, err)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	// Callers of cluster a wait on a fetch that will not end in this test.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := cl.Verify(ctx, "a", tok, testAudience)
			require.ErrorIs(t, err, ErrUnavailable)
		})
	}
	require.Eventually(t, func() bool { return stalled.hits.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	for range 20 {
		sa, err := cl.Verify(context.Background(), "b", tok, testAudience)
		require.NoError(t, err, "cluster b answers while a's fetch hangs")
		require.Equal(t, "b", sa.Cluster)
	}
	cancel()
	wg.Wait()
	require.EqualValues(t, 1, stalled.hits.Load())
	stalled.CloseClientConnections()
	slow.keys.idle()
}

func TestJWKSMaxKeyAge(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	const maxAge = time.Hour
	v, err := NewJWKSVerifier(JWKSConfig{
		Cluster: testCluster, Issuer: testIssuer, JWKSURL: srv.URL, MaxKeyAge: maxAge,
		HTTPClient: srv.Client(), Clock: clock.Now, Logger: discardLogger(),
	})
	require.NoError(t, err)
	tok := func() string { return keyA().sign(t, k8sTokenClaims(clock.Now())) }
	_, err = v.Verify(ctx, tok(), testAudience)
	require.NoError(t, err)

	// The endpoint fails; the keys held stay in use up to the max age.
	srv.set(http.StatusServiceUnavailable, nil)
	for clock.Advance(DefaultRefreshInterval); ; clock.Advance(DefaultRefreshInterval) {
		if clock.Now().Sub(v.keys.fetchedAtForTest()) > maxAge {
			break
		}
		_, err = v.Verify(ctx, tok(), testAudience)
		require.NoError(t, err, "keys %s old", clock.Now().Sub(v.keys.fetchedAtForTest()))
		v.keys.idle()
	}
	_, err = v.Verify(ctx, tok(), testAudience)
	require.ErrorIs(t, err, ErrKeysTooOld)
	require.NotErrorIs(t, err, ErrInvalidToken)
	require.ErrorContains(t, err, "503")
	v.keys.idle()

	// The endpoint recovers: the next fetch (in the background) restores
	// the cluster.
	srv.set(http.StatusOK, jwksJSON(t, keyA().jwk()))
	clock.Advance(DefaultMinRefetchInterval)
	_, err = v.Verify(ctx, tok(), testAudience)
	require.ErrorIs(t, err, ErrKeysTooOld)
	v.keys.idle()
	_, err = v.Verify(ctx, tok(), testAudience)
	require.NoError(t, err)
}

func TestJWKSIdlePastMaxKeyAgeFetchesFirst(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	_, err := v.Verify(ctx, keyA().sign(t, k8sTokenClaims(clock.Now())), testAudience)
	require.NoError(t, err)

	// No token for longer than the max age, the endpoint healthy: the
	// caller waits for a fetch rather than trusting old keys or failing.
	clock.Advance(DefaultMaxKeyAge + time.Minute)
	_, err = v.Verify(ctx, keyA().sign(t, k8sTokenClaims(clock.Now())), testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 2, srv.hits.Load())
}

func TestJWKSDiscoveryCrossHostJWKSURI(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	keys := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	disco := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"` + testIssuer + `","jwks_uri":"` + keys.URL + `/openid/v1/jwks"}`))
	}))
	t.Cleanup(disco.Close)
	keysURL, err := url.Parse(keys.URL)
	require.NoError(t, err)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	for _, tt := range []struct {
		name    string
		hosts   []string
		wantErr bool
	}{
		// The two test servers share 127.0.0.1 but not the port: another
		// host:port is another origin.
		{name: "refused by default", wantErr: true},
		{name: "other hosts allowed", hosts: []string{"keys.example.test"}, wantErr: true},
		{name: "allowed in config", hosts: []string{keysURL.Host}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := keys.hits.Load()
			v, err := NewJWKSVerifier(JWKSConfig{
				Cluster: testCluster, Issuer: testIssuer, DiscoveryURL: disco.URL, JWKSHosts: tt.hosts,
				Clock: clock.Now, Logger: discardLogger(),
			})
			require.NoError(t, err)
			_, err = v.Verify(ctx, tok, testAudience)
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrUnavailable)
			require.ErrorIs(t, err, errCrossHostJWKS)
			require.Equal(t, before, keys.hits.Load(), "the other host is never contacted")
		})
	}
}

// idle waits until no fetch is in flight.
func (s *keySet) idle() {
	s.mu.Lock()
	done := s.inflight
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (s *keySet) fetchedAtForTest() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchedAt
}
