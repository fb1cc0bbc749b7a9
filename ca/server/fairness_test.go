package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// agentCtx is a call from an agent whose verified certificate names id.
func agentCtx(id string) context.Context {
	u, _ := url.Parse(id)
	leaf := &x509.Certificate{URIs: []*url.URL{u}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}},
	}})
}

func batchOf(n int) *cav1.BatchSignSVIDsRequest {
	r := &cav1.BatchSignSVIDsRequest{}
	for range n {
		r.Requests = append(r.Requests, &cav1.SVIDRequest{})
	}
	return r
}

func TestAgentShares(t *testing.T) {
	now := time.Unix(1_760_000_000, 0)
	l := Limits{}
	l.fill()
	require.Equal(t, float64(DefaultAgentRatePerSecond), l.AgentRatePerSecond)
	a := newAgentShares(l, func() time.Time { return now })
	info := &grpc.UnaryServerInfo{FullMethod: cav1.CAService_BatchSignSVIDs_FullMethodName}
	const flooder, quiet = "spiffe://cluster.local/lanyard/agent/c/flood", "spiffe://cluster.local/lanyard/agent/c/quiet"

	// Held batches: the flooder fills its share of the queue; its next
	// batch is refused while another agent's passes.
	release := make(chan struct{})
	held := make(chan struct{})
	hold := func(context.Context, any) (any, error) { held <- struct{}{}; <-release; return nil, nil }
	pass := func(context.Context, any) (any, error) { return nil, nil }
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := a.interceptor(agentCtx(flooder), batchOf(MaxBatchEntries), info, hold)
			errs <- err
		}()
		<-held
	}
	_, err := a.interceptor(agentCtx(flooder), batchOf(1), info, pass)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "in flight")
	_, err = a.interceptor(agentCtx(quiet), batchOf(MaxBatchEntries), info, pass)
	require.NoError(t, err, "another agent is not affected")
	close(release)
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	// The flooder's bucket is empty (2 × 1000 entries at once): refused
	// until it refills, at DefaultAgentRatePerSecond.
	_, err = a.interceptor(agentCtx(flooder), batchOf(10), info, pass)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "entries/s")
	now = now.Add(time.Second)
	_, err = a.interceptor(agentCtx(flooder), batchOf(DefaultAgentRatePerSecond), info, pass)
	require.NoError(t, err)

	// Other methods, callers without a certificate and out-of-range
	// batches go to the handler, which answers them.
	_, err = a.interceptor(context.Background(), batchOf(1), info, pass)
	require.NoError(t, err)
	_, err = a.interceptor(agentCtx(flooder), &cav1.GetBundleRequest{}, &grpc.UnaryServerInfo{FullMethod: cav1.CAService_GetBundle_FullMethodName}, pass)
	require.NoError(t, err)
}
