package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Defaults of the per-agent shares on BatchSignSVIDs. A node runs at most
// a few hundred pods (110 by default in Kubernetes); a node that restarts
// asks for all of them at once, and a Deployment of 1,000 replicas spread
// over nodes asks each agent for a few. So the burst covers a full batch
// and more than a whole node, the rate a node's pods churning every
// second, and only an agent sending many times its share is refused.
const (
	// DefaultAgentRatePerSecond and DefaultAgentRateBurst are one agent's
	// token bucket, counted in batch entries.
	DefaultAgentRatePerSecond = 100
	DefaultAgentRateBurst     = 2 * MaxBatchEntries
	// DefaultAgentMaxQueued bounds one agent's batch entries admitted and
	// not yet answered: its share of the queue and the signing slots.
	DefaultAgentMaxQueued = 2 * MaxBatchEntries
	// defaultAgentsTracked bounds the agents whose buckets are kept.
	defaultAgentsTracked = 100_000
)

// agentShares refuses (ResourceExhausted) a batch from an agent that has
// too many entries in flight or has used up its rate, before the batch
// takes any room in the shared queue, so that one flooding agent is
// refused alone while the others keep their latency.
type agentShares struct {
	rate      *rateLimiter
	maxQueued int

	mu     sync.Mutex
	queued map[string]int
}

func newAgentShares(l Limits, clock func() time.Time) *agentShares {
	return &agentShares{
		rate:      newRateLimiter(l.AgentRatePerSecond, l.AgentRateBurst, defaultAgentsTracked, clock),
		maxQueued: l.AgentMaxQueued,
		queued:    map[string]int{},
	}
}

func (a *agentShares) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	r, ok := req.(*cav1.BatchSignSVIDsRequest)
	if !ok || info.FullMethod != cav1.CAService_BatchSignSVIDs_FullMethodName {
		return handler(ctx, req)
	}
	id, ok := peerURI(ctx)
	n := len(r.GetRequests())
	if !ok || n == 0 || n > MaxBatchEntries {
		return handler(ctx, req) // refused there, with the reason
	}
	done, err := a.admit(id, n)
	if err != nil {
		return nil, toStatus(err).Err()
	}
	defer done()
	return handler(ctx, req)
}

func (a *agentShares) admit(id string, n int) (done func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if q := a.queued[id]; q+n > a.maxQueued {
		return nil, fmt.Errorf("%w: agent has %d entries in flight, at most %d", ErrOverloaded, q, a.maxQueued)
	}
	if !a.rate.allowN(id, n) {
		return nil, fmt.Errorf("%w: agent over %v entries/s", ErrOverloaded, a.rate.limit)
	}
	a.queued[id] += n
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.queued[id] -= n; a.queued[id] <= 0 {
			delete(a.queued, id)
		}
	}, nil
}

// peerURI is the URI SAN of the caller's verified client certificate.
func peerURI(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 ||
		len(info.State.VerifiedChains[0][0].URIs) != 1 {
		return "", false
	}
	return info.State.VerifiedChains[0][0].URIs[0].String(), true
}
