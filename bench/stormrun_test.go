package bench

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/storage/storagetest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// pipelineSigner signs attested entries with the real issuing pipeline
// in-process, as the CA does for a unix-attested workload.
type pipelineSigner struct {
	ca *ca.CA

	mu       sync.Mutex
	failNext codes.Code // fail the next call with it, once
}

func (p *pipelineSigner) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	p.mu.Lock()
	code := p.failNext
	p.failNext = codes.OK
	p.mu.Unlock()
	if code != codes.OK {
		return nil, status.Error(code, "scripted failure")
	}
	out := make([]*cav1.SVIDResult, len(reqs))
	for i, r := range reqs {
		a := r.GetAttested()
		issued, err := p.ca.SignWorkload(ctx, ca.WorkloadRequest{
			Subject: ca.Subject{Namespace: a.GetNamespace(), ServiceAccount: a.GetServiceAccount()},
			CSR:     r.GetCsr(), TTL: r.GetTtl().AsDuration(),
		})
		if err != nil {
			return nil, err
		}
		chain := make([][]byte, len(issued.Chain))
		for j, c := range issued.Chain {
			chain[j] = c.Raw
		}
		out[i] = &cav1.SVIDResult{Id: r.GetId(), Svid: &cav1.X509SVID{SpiffeId: issued.ID.String(), CertChain: chain}}
	}
	return out, nil
}

func newPipelineSigner(t *testing.T) *pipelineSigner {
	t.Helper()
	root, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: t.TempDir(), TrustDomain: stormTD.Name()})
	require.NoError(t, err)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: stormTD, Upstream: root, Name: "bench-test"})
	require.NoError(t, err)
	require.NoError(t, auth.Prepare(context.Background()))
	c, err := ca.New(ca.Config{TrustDomain: stormTD, Keys: auth, Recorder: &storagetest.Recorder{}})
	require.NoError(t, err)
	return &pipelineSigner{ca: c}
}

// TestRunStorm runs a small storm end to end on real agent managers and
// the real issuing pipeline in-process, with SVIDs of 2 s (renewed after
// about 1 s).
func TestRunStorm(t *testing.T) {
	for _, tt := range []struct {
		name     string
		failNext codes.Code
		wantFail bool
	}{
		{name: "clean"},
		{name: "an unavailable CA at the cold start is a failure", failNext: codes.Unavailable, wantFail: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			signer := newPipelineSigner(t)
			signer.failNext = tt.failNext
			const n, m, ttl = 60, 3, 2 * time.Second
			f := newStormFleet()
			for i := range m {
				require.NoError(t, f.addAgent(stormNode(i), nil, signer, stormTD, ttl, nil))
			}
			res, err := runStorm(context.Background(), f, stormPlan{workloads: n, agents: m, ttl: ttl, td: stormTD}, nil, func(string, ...any) {})
			require.NoError(t, err)
			tl := res.tl
			require.Equal(t, n, tl.fetched)
			require.Equal(t, n, tl.renewed)
			require.True(t, res.stormMeasured)
			require.Zero(t, tl.expiredFirst)
			require.False(t, tl.firstRenew.Before(tl.lastFetch), "the phases are apart")
			require.Greater(t, tl.lastFetch.Sub(res.start), time.Duration(0))
			require.GreaterOrEqual(t, res.storm.agents.entries, uint64(n))
			require.EqualValues(t, m, res.storm.agents.agents)
			require.GreaterOrEqual(t, res.rotations, float64(2*n))
			var out bytes.Buffer
			res.report(&out)
			if !tt.wantFail {
				require.Zero(t, res.failures(), out.String())
				require.LessOrEqual(t, res.cold.agents.calls, uint64(2*m), "the cold start is batched")
				require.Contains(t, out.String(), "storm failures: 0")
				return
			}
			require.NotZero(t, res.failures(), out.String())
			require.Equal(t, float64(n/m), res.renewFailures["Unavailable"], "the failed call's entries, as the agent counts them")
			require.Contains(t, out.String(), "FAILED (BatchSignSVIDs as the agents saw it): call Unavailable x20")
		})
	}
}
