package tokens

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestCollector(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	api := newFakeAPI(authenticated(), nil)
	review := newReviewVerifier(t, api, clock, 0)
	tok := reviewToken(clock.Now().Add(time.Hour))
	for range 3 {
		_, err := review.Verify(ctx, tok, testAudience)
		require.NoError(t, err)
	}
	cached := newTestCache(t, &countingVerifier{sa: ServiceAccount{Namespace: "default", Name: "web", Expiry: time.Now().Add(time.Hour)}}, CacheConfig{})
	for _, tk := range []string{"a", "a", "b"} {
		_, err := cached.Verify(ctx, tk, testAudience)
		require.NoError(t, err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(
		ClusterStats{Cluster: "west", Method: MethodTokenReview, Source: review},
		ClusterStats{Cluster: "east", Method: MethodJWKS, Source: cached},
	))
	want := `
# HELP lanyard_ca_token_cache_hits_total Tokens answered from the positive cache, by cluster and method.
# TYPE lanyard_ca_token_cache_hits_total counter
lanyard_ca_token_cache_hits_total{cluster="east",method="jwks"} 1
lanyard_ca_token_cache_hits_total{cluster="west",method="tokenreview"} 2
# HELP lanyard_ca_token_calls_total Tokens verified past the cache: TokenReviews created (tokenreview) or checks against the key set (jwks).
# TYPE lanyard_ca_token_calls_total counter
lanyard_ca_token_calls_total{cluster="east",method="jwks"} 2
lanyard_ca_token_calls_total{cluster="west",method="tokenreview"} 1
# HELP lanyard_ca_token_requests_total Service-account tokens asked to be verified, by cluster and method.
# TYPE lanyard_ca_token_requests_total counter
lanyard_ca_token_requests_total{cluster="east",method="jwks"} 3
lanyard_ca_token_requests_total{cluster="west",method="tokenreview"} 3
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want)))
}
