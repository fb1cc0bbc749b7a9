package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// TestStalledKeyEndpointDoesNotSlowOtherClusters runs `lanyard ca` with
// two clusters that share an issuer: "stalled", whose key endpoint accepts
// requests and never answers, and "healthy". While callers of the stalled
// cluster wait on its one fetch, and after that fetch has timed out, the
// healthy cluster's callers keep getting agent certificates, and the
// stalled endpoint sees one request however many callers there are.
func TestStalledKeyEndpointDoesNotSlowOtherClusters(t *testing.T) {
	t.Parallel()
	const (
		fetchTimeout = 10 * time.Second
		// healthyDeadline bounds each call of the healthy cluster, well
		// under fetchTimeout: a call that waited for the stalled fetch
		// would miss it.
		healthyDeadline = 5 * time.Second
	)
	// One token from the real CLI creates the issuer; the others are that
	// token with another node, signed with the issuer's key.
	issuerDir := t.TempDir()
	stalledTok := harness.Token(t, issuerDir, harness.AgentNamespace, harness.AgentServiceAccount,
		"--pod", "lanyard-agent-node-s", "--node", "node-s")
	key, kid := harness.IssuerKey(t, issuerDir)
	template := templateOf(t, stalledTok)
	agentToken := func(node string) string {
		c := template.clone(t)
		c.kubernetes(t)["node"].(map[string]any)["name"] = node
		return signJWS(t, jose.RS256, key, kid, c)
	}
	jwks, err := os.ReadFile(filepath.Join(issuerDir, harness.DevIssuerJWKSFile))
	require.NoError(t, err)

	var stalledHits atomic.Int64
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stalledHits.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); stalled.Close() })
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(healthy.Close)

	ca := harness.StartCA(t, harness.CAOptions{Config: map[string]any{
		"clusters": []any{
			map[string]any{
				"name": "stalled", "issuer": harness.DevIssuer, "jwksURL": stalled.URL,
				// A retry interval longer than the test: every request the
				// endpoint sees is counted below.
				"keys": map[string]any{"fetchTimeout": fetchTimeout.String(), "retryAfterFailure": "1h"},
			},
			map[string]any{"name": "healthy", "issuer": harness.DevIssuer, "jwksURL": healthy.URL},
		},
		"agents": map[string]any{"serviceAccounts": []string{harness.AgentNamespace + "/" + harness.AgentServiceAccount}},
	}})
	client := ca.Client(t)
	attest := func(ctx context.Context, cluster, token string) error {
		_, err := client.AttestAgent(ctx, &cav1.AttestAgentRequest{
			Cluster: cluster, Token: token, Csr: harness.NewCSR(t, harness.CSROptions{}).DER,
		})
		return err
	}
	healthyCall := func(i int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), healthyDeadline)
		defer cancel()
		require.NoError(t, attest(ctx, "healthy", agentToken(fmt.Sprintf("node-h%d", i))),
			"healthy cluster call %d", i)
	}

	// Phase 1: callers of the stalled cluster wait on its one fetch.
	var wg sync.WaitGroup
	const waiters = 16
	codesSeen := make([]codes.Code, waiters)
	for i := range waiters {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), fetchTimeout+harness.CallTimeout)
			defer cancel()
			codesSeen[i] = status.Code(attest(ctx, "stalled", stalledTok))
		})
	}
	require.Eventually(t, func() bool { return stalledHits.Load() == 1 }, harness.CallTimeout, 10*time.Millisecond,
		"the stalled endpoint is asked for its keys")
	for i := range 5 {
		healthyCall(i)
	}
	wg.Wait()
	for i, c := range codesSeen {
		require.Equal(t, codes.Unavailable, c, "stalled cluster caller %d", i)
	}

	// Phase 2: the endpoint is known to fail; its callers are answered
	// from the negative cache while the healthy cluster keeps issuing.
	for i := range 50 {
		err := attest(harness.Context(t), "stalled", stalledTok)
		require.Equal(t, codes.Unavailable, status.Code(err), "stalled cluster call %d: %v", i, err)
		if i%10 == 0 {
			healthyCall(100 + i)
		}
	}
	require.EqualValues(t, 1, stalledHits.Load(), "one fetch for %d callers", waiters+50)
}
