package tokens

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/internal/clocktest"
)

// jwksServer serves a key set that tests can change, counts hits, and can
// be told to fail.
type jwksServer struct {
	*httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	body   []byte
	status int
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func urlVerifier(t *testing.T, clock *clocktest.Clock, srv *httptest.Server, url string) *JWKSVerifier {
	t.Helper()
	v, err := NewJWKSVerifier(JWKSConfig{
		Cluster: testCluster, Issuer: testIssuer, JWKSURL: url,
		HTTPClient: srv.Client(), Clock: clock.Now, Logger: discardLogger(),
	})
	require.NoError(t, err)
	return v
}

func TestJWKSUnknownKidRefetchIsRateLimited(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	claims := k8sTokenClaims(clock.Now())
	tokA, tokB := keyA().sign(t, claims), keyB().sign(t, claims)

	_, err := v.Verify(ctx, tokA, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.hits.Load(), "first use loads the key set")

	_, err = v.Verify(ctx, tokA, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.hits.Load(), "keys are cached")

	clock.Advance(DefaultMinRefetchInterval)
	for range 5 {
		_, err = v.Verify(ctx, tokB, testAudience)
		require.ErrorIs(t, err, ErrInvalidToken)
		require.ErrorContains(t, err, "unknown key id")
	}
	require.EqualValues(t, 2, srv.hits.Load(), "unknown kid: one refetch, then rate-limited")

	clock.Advance(DefaultMinRefetchInterval - time.Second)
	_, err = v.Verify(ctx, tokB, testAudience)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.EqualValues(t, 2, srv.hits.Load())

	clock.Advance(time.Second)
	_, err = v.Verify(ctx, tokB, testAudience)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.EqualValues(t, 3, srv.hits.Load(), "refetch allowed again after the interval")
}

func TestJWKSKeyRotation(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	claims := k8sTokenClaims(clock.Now())
	tokA, tokB := keyA().sign(t, claims), keyB().sign(t, claims)

	_, err := v.Verify(ctx, tokA, testAudience)
	require.NoError(t, err)

	// The issuer rotates to key B only.
	srv.set(http.StatusOK, jwksJSON(t, keyB().jwk()))
	clock.Advance(DefaultMinRefetchInterval)
	_, err = v.Verify(ctx, tokB, testAudience)
	require.NoError(t, err, "new kid appears after refetch")
	require.EqualValues(t, 2, srv.hits.Load())

	_, err = v.Verify(ctx, tokA, testAudience)
	require.ErrorIs(t, err, ErrInvalidToken, "retired key is gone")
}

func TestJWKSConcurrentCallersShareOneFetch(t *testing.T) {
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	claims := k8sTokenClaims(clock.Now())
	verifyAll := func(tok string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = v.Verify(context.Background(), tok, testAudience)
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
	}

	verifyAll(keyA().sign(t, claims))
	require.EqualValues(t, 1, srv.hits.Load(), "first load: one fetch for all callers")

	srv.set(http.StatusOK, jwksJSON(t, keyA().jwk(), keyB().jwk()))
	clock.Advance(DefaultMinRefetchInterval)
	verifyAll(keyB().sign(t, claims))
	require.EqualValues(t, 2, srv.hits.Load(), "unknown kid: one refetch for all callers")
}

func TestJWKSPeriodicRefresh(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	_, err := v.Verify(ctx, tok, testAudience)
	require.NoError(t, err)
	clock.Advance(DefaultRefreshInterval - time.Second)
	_, err = v.Verify(ctx, tok, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.hits.Load())

	clock.Advance(time.Second)
	_, err = v.Verify(ctx, tok, testAudience)
	require.NoError(t, err, "a stale set answers at once")
	v.keys.idle()
	require.EqualValues(t, 2, srv.hits.Load(), "stale key set is refreshed in the background")

	// A failing refresh keeps the old keys in use.
	srv.set(http.StatusInternalServerError, nil)
	clock.Advance(DefaultRefreshInterval)
	_, err = v.Verify(ctx, tok, testAudience)
	require.NoError(t, err)
	v.keys.idle()
	require.EqualValues(t, 3, srv.hits.Load())
	_, err = v.Verify(ctx, tok, testAudience)
	require.NoError(t, err)
	require.EqualValues(t, 3, srv.hits.Load(), "failed refresh is rate-limited")
}

func TestJWKSUnavailable(t *testing.T) {
	ctx := context.Background()
	claims := k8sTokenClaims(newFakeClock().Now())
	tok := keyA().sign(t, claims)
	for _, tt := range []struct {
		name   string
		status int
		body   []byte
		reason string
	}{
		{name: "server error", status: http.StatusInternalServerError, reason: "500"},
		{name: "not found", status: http.StatusNotFound, reason: "404"},
		{name: "not json", status: http.StatusOK, body: []byte("<html>"), reason: "parse key set"},
		{name: "no usable key", status: http.StatusOK, body: []byte(`{"keys":[]}`), reason: "no usable"},
		{name: "body over 1 MiB", status: http.StatusOK, body: []byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxDocumentSize) + `"}`), reason: "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			srv := newJWKSServer(t, tt.body)
			srv.set(tt.status, tt.body)
			v := urlVerifier(t, clock, srv.Server, srv.URL)

			_, err := v.Verify(ctx, tok, testAudience)
			require.ErrorIs(t, err, ErrUnavailable)
			require.ErrorContains(t, err, tt.reason)
			_, err = v.Verify(ctx, tok, testAudience)
			require.ErrorIs(t, err, ErrUnavailable, "still unavailable while rate-limited")
			require.EqualValues(t, 1, srv.hits.Load())
			require.ErrorIs(t, v.Refresh(ctx), ErrUnavailable)

			// The endpoint recovers. While it is known to fail, callers
			// are answered at once and the retry runs in the background.
			srv.set(http.StatusOK, jwksJSON(t, keyA().jwk()))
			clock.Advance(DefaultMinRefetchInterval)
			_, err = v.Verify(ctx, tok, testAudience)
			require.ErrorIs(t, err, ErrUnavailable, "the first caller after the negative cache does not wait")
			v.keys.idle()
			require.EqualValues(t, 3, srv.hits.Load(), "first fetch, Refresh, background retry")
			_, err = v.Verify(ctx, tok, testAudience)
			require.NoError(t, err)
		})
	}
}

func TestJWKSEndpointDown(t *testing.T) {
	clock := newFakeClock()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	v, err := NewJWKSVerifier(JWKSConfig{Cluster: testCluster, Issuer: testIssuer, JWKSURL: url, Clock: clock.Now})
	require.NoError(t, err)

	_, err = v.Verify(context.Background(), keyA().sign(t, k8sTokenClaims(clock.Now())), testAudience)
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "key set not loaded")
}

func TestJWKSCanceledContext(t *testing.T) {
	clock := newFakeClock()
	srv := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	v := urlVerifier(t, clock, srv.Server, srv.URL)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, tok, testAudience)
	require.ErrorIs(t, err, ErrUnavailable)

	// The canceled attempt does not count against the rate limit.
	_, err = v.Verify(context.Background(), tok, testAudience)
	require.NoError(t, err)
}

func TestJWKSRedirects(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	other := newJWKSServer(t, jwksJSON(t, keyA().jwk()))
	mux := http.NewServeMux()
	mux.Handle("/jwks", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(jwksJSON(t, keyA().jwk()))
	}))
	mux.Handle("/same-host", http.RedirectHandler("/jwks", http.StatusFound))
	mux.Handle("/other-host", http.RedirectHandler(other.URL+"/jwks", http.StatusFound))
	mux.Handle("/loop", http.RedirectHandler("/loop", http.StatusFound))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	for _, tt := range []struct {
		path    string
		wantErr string
	}{
		{path: "/same-host"},
		{path: "/other-host", wantErr: "redirect to another host refused"},
		{path: "/loop", wantErr: "redirects"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			v := urlVerifier(t, clock, srv, srv.URL+tt.path)
			_, err := v.Verify(ctx, tok, testAudience)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrUnavailable)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
	require.Zero(t, other.hits.Load(), "the other host was never contacted")
}

func TestJWKSDiscovery(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	var issuer, jwksURI atomic.Value
	var hits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"issuer":"` + issuer.Load().(string) + `","jwks_uri":"` + jwksURI.Load().(string) +
			`","response_types_supported":["id_token"],"id_token_signing_alg_values_supported":["RS256"]}`))
	})
	mux.HandleFunc("/openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		// As kube-apiserver: only application/jwk-set+json, else 406.
		if !strings.Contains(r.Header.Get("Accept"), "application/jwk-set+json") {
			w.WriteHeader(http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwksJSON(t, keyA().jwk()))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tok := keyA().sign(t, k8sTokenClaims(clock.Now()))

	for _, tt := range []struct {
		name      string
		discovery string
		issuer    string
		jwksURI   string
		wantErr   string
	}{
		{name: "base url", discovery: srv.URL, issuer: testIssuer, jwksURI: srv.URL + "/openid/v1/jwks"},
		{name: "base url with slash", discovery: srv.URL + "/", issuer: testIssuer, jwksURI: srv.URL + "/openid/v1/jwks"},
		{name: "full url", discovery: srv.URL + wellKnownOIDC, issuer: testIssuer, jwksURI: srv.URL + "/openid/v1/jwks"},
		{name: "issuer mismatch", discovery: srv.URL, issuer: "https://evil.example", jwksURI: srv.URL + "/openid/v1/jwks", wantErr: "not the configured issuer"},
		{name: "no jwks_uri", discovery: srv.URL, issuer: testIssuer, wantErr: "no jwks_uri"},
		{name: "relative jwks_uri", discovery: srv.URL, issuer: testIssuer, jwksURI: "/openid/v1/jwks", wantErr: "not an absolute url"},
		{name: "file jwks_uri", discovery: srv.URL, issuer: testIssuer, jwksURI: "file:///etc/passwd", wantErr: "not an absolute url"},
		{name: "ftp jwks_uri", discovery: srv.URL, issuer: testIssuer, jwksURI: "ftp://host/jwks", wantErr: "scheme"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			issuer.Store(tt.issuer)
			jwksURI.Store(tt.jwksURI)
			v, err := NewJWKSVerifier(JWKSConfig{
				Cluster: testCluster, Issuer: testIssuer, DiscoveryURL: tt.discovery,
				HTTPClient: srv.Client(), Clock: clock.Now,
			})
			require.NoError(t, err)
			_, err = v.Verify(ctx, tok, testAudience)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrUnavailable)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
	require.Positive(t, hits.Load())
}

func TestJWKSFile(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "jwks.json")
	v, err := NewJWKSVerifier(JWKSConfig{Cluster: testCluster, Issuer: testIssuer, JWKSFile: path, Clock: clock.Now})
	require.NoError(t, err)
	claims := k8sTokenClaims(clock.Now())

	_, err = v.Verify(ctx, keyA().sign(t, claims), testAudience)
	require.ErrorIs(t, err, ErrUnavailable, "file missing")

	require.NoError(t, os.WriteFile(path, jwksJSON(t, keyA().jwk()), 0o644))
	require.NoError(t, v.Refresh(ctx))
	_, err = v.Verify(ctx, keyA().sign(t, claims), testAudience)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(path, jwksJSON(t, keyB().jwk()), 0o644))
	clock.Advance(DefaultMinRefetchInterval)
	_, err = v.Verify(ctx, keyB().sign(t, claims), testAudience)
	require.NoError(t, err, "rewritten file is read again for an unknown kid")
}

func TestFetchClientKeepsCallerClient(t *testing.T) {
	orig := &http.Client{Timeout: time.Second}
	c := fetchClient(orig)
	require.Nil(t, orig.CheckRedirect, "caller's client is not modified")
	require.NotNil(t, c.CheckRedirect)
	require.Equal(t, time.Second, c.Timeout)
	require.Zero(t, fetchClient(nil).Timeout, "fetches are bounded by the key set, not the client")
}
