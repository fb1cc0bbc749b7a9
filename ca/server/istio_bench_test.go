package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
	istiopb "istio.io/api/security/v1alpha1"
)

// BenchmarkIstioCreateCertificate drives the Istio API as a fleet of
// istio-agents would: real gRPC over TLS on 127.0.0.1, the real pipeline
// (JWKS token verification behind the positive cache, policy, CSR checks,
// signing, per-identity rate limit) and the SQLite store in a temp dir
// behind the group-commit writer, so every answer waits for its record.
// 64 identities, each with its own token and P-256 CSR, are spread over
// 16 callers per CPU. It reports throughput (certs/s) and latency
// percentiles (p50-ms, p99-ms).
func BenchmarkIstioCreateCertificate(b *testing.B) {
	e := newIstioEnv(b, istioEnvOptions{
		// The limit is on, but high enough never to refuse the benchmark.
		istio: IstioConfig{RateLimit: 1e9, RateBurst: 1 << 30},
		cache: true,
	})
	const identities = 64
	type caller struct {
		ctx context.Context
		req *istiopb.IstioCertificateRequest
	}
	callers := make([]caller, identities)
	for i := range callers {
		sa := fmt.Sprintf("bench-%d", i)
		md := metadata.Pairs(bearer(e.token(b, "default", sa), "dev")...)
		callers[i] = caller{
			ctx: metadata.NewOutgoingContext(context.Background(), md),
			req: &istiopb.IstioCertificateRequest{Csr: istioCSR(b, workloadIDString("default", sa)), ValidityDuration: 3600},
		}
	}
	// Warm up: TLS handshake, key set, token cache.
	for _, c := range callers {
		_, err := e.client.CreateCertificate(c.ctx, c.req)
		require.NoError(b, err)
	}

	var (
		mu   sync.Mutex
		lat  []time.Duration
		next int
	)
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		c := callers[next%identities]
		next++
		mu.Unlock()
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			if _, err := e.client.CreateCertificate(c.ctx, c.req); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "certs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
