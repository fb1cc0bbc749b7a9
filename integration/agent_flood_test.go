package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
	"github.com/lanyard-id/lanyard/integration/harness"
)

// forgedToken is a well-formed projected token for default/<sa> whose
// signature is random bytes: the agent cannot tell, the CA refuses it.
func forgedToken(t *testing.T, sa string, i int) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	now := time.Now().Unix()
	return enc(map[string]any{"alg": "RS256", "kid": "forged"}) + "." + enc(map[string]any{
		"iss": harness.DevIssuer, "sub": "system:serviceaccount:default:" + sa, "aud": []string{"lanyard"},
		"iat": now, "nbf": now, "exp": now + 3600, "jti": fmt.Sprint(i),
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]any{"name": sa, "uid": fmt.Sprintf("uid-%d", i)},
			"pod":            map[string]any{"name": fmt.Sprintf("forged-%d", i), "uid": fmt.Sprintf("pod-%d", i)},
		},
	}) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestAgentForgedTokenFlood floods a real `lanyard agent` with SDS streams
// that each present a different forged token, while a real workload
// subscribes with its real token. Every forged stream is refused
// (PermissionDenied once the CA has refused it, or ResourceExhausted while
// too many are pending), the real workload is served, and afterwards the
// agent holds no state for the forged tokens and its heap has not grown
// with their number.
func TestAgentForgedTokenFlood(t *testing.T) {
	t.Parallel()
	const (
		forged  = 3000
		workers = 8
		// heapSlack bounds the heap growth the flood may leave behind. A
		// cache entry per forged token (the token, a key, a refusal)
		// would hold several KiB each; the bound is well above GC noise.
		heapSlack = 48 << 20
	)
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	ag := harness.StartAgent(t, d, harness.AgentOptions{Node: "node-f"})
	conn := dialSocket(t, ag.SocketPath)
	heapBefore := ag.Metric(t, "go_memstats_heap_inuse_bytes")

	var mu sync.Mutex
	seen := map[codes.Code]int{}
	forgedStream := func(i int) {
		ctx, cancel := context.WithTimeout(t.Context(), harness.CallTimeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+forgedToken(t, "flood", i))
		stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err == nil {
			err = stream.Send(&discoveryv3.DiscoveryRequest{
				Node: &corev3.Node{Id: "flood", Cluster: "flood"}, ResourceNames: []string{sdsDefault},
			})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		mu.Lock()
		seen[status.Code(err)]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				forgedStream(i)
			}
		})
	}
	go func() {
		defer close(next)
		for i := range forged {
			next <- i
		}
	}()

	// During the flood, a real workload with a real token is served.
	real := d.Token(t, "default", "real", "--pod", "real-pod", "--node", ag.Node)
	c := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault}, Token: real, Reconnect: 200 * time.Millisecond})
	r := nextFullSDS(t, c, 2*harness.CallTimeout, sdsDefault)
	sdsSVID(t, r.Response, sdsDefault, d.Bundle(t), d.WorkloadID("default", "real"))
	wg.Wait()

	mu.Lock()
	t.Logf("forged streams by code: %v", seen)
	for code, n := range seen {
		require.Contains(t, []codes.Code{codes.PermissionDenied, codes.ResourceExhausted}, code,
			"%d forged streams ended with %s", n, code)
	}
	require.Positive(t, seen[codes.PermissionDenied], "the CA's refusals reach the forged callers")
	mu.Unlock()

	// No state is left for the forged tokens: the cache holds the real
	// workload only, and the heap did not grow with the flood.
	eventually(t, harness.CallTimeout, "forged entries dropped", func() bool {
		return ag.Metric(t, "lanyard_agent_cache_entries") <= 1
	})
	heapAfter := ag.Metric(t, "go_memstats_heap_inuse_bytes")
	t.Logf("agent heap in use: %.1f MiB before, %.1f MiB after %d forged tokens", heapBefore/(1<<20), heapAfter/(1<<20), forged)
	require.Less(t, heapAfter, heapBefore+heapSlack)
}

// TestAgentSocketLimits sends SDS requests past each limit of a real
// `lanyard agent`'s socket: each is refused within the call's deadline,
// and the agent keeps serving.
func TestAgentSocketLimits(t *testing.T) {
	t.Parallel()
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	ag := harness.StartAgent(t, d, harness.AgentOptions{Node: "node-l"})
	conn := dialSocket(t, ag.SocketPath)
	names := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%0*d", size, i)
		}
		return out
	}
	for _, tt := range []struct {
		name  string
		names []string
		want  codes.Code
	}{
		// 100k names are over 1 MiB: refused by the message size limit.
		{name: "100k names", names: names(100_000, 12), want: codes.ResourceExhausted},
		{name: "65 names", names: names(65, 12), want: codes.InvalidArgument},
		{name: "a 4 KiB name", names: names(1, 4096), want: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*harness.CallTimeout)
			defer cancel()
			stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
			require.NoError(t, err)
			// The server may end the stream before the send completes.
			_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "limits", Cluster: "limits"}, ResourceNames: tt.names})
			_, err = stream.Recv()
			require.Equal(t, tt.want, status.Code(err), "error %v", err)
		})
	}
	c := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault}})
	r := nextFullSDS(t, c, harness.CallTimeout, sdsDefault)
	sdsSVID(t, r.Response, sdsDefault, d.Bundle(t), d.WorkloadID("default", "default"))
}
