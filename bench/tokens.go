package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// identity is one workload service account of the benchmark.
type identity struct {
	namespace, serviceAccount string
}

// identities returns n service accounts spread over up to 25 namespaces.
func identities(n int) []identity {
	out := make([]identity, n)
	for i := range out {
		out[i] = identity{namespace: fmt.Sprintf("bench-ns-%02d", i%25), serviceAccount: fmt.Sprintf("sa-%03d", i)}
	}
	return out
}

// workToken is a workload token and the identity it names.
type workToken struct {
	token    string
	identity int // index into the identities
}

// tokenPool hands out the tokens minted for one agent for one run of the
// load. Each token is handed out once; past the end the pool starts again
// from the beginning and counts the reuse (a reused token may be answered
// from the CA's verified-token cache without JWT verification).
type tokenPool struct {
	toks   []workToken
	next   atomic.Uint64
	reused atomic.Uint64
}

func (p *tokenPool) take() workToken {
	i := p.next.Add(1) - 1
	n := uint64(len(p.toks))
	if i >= n {
		p.reused.Add(1)
	}
	return p.toks[i%n]
}

// fresh is how many distinct tokens were handed out.
func (p *tokenPool) fresh() uint64 { return min(p.next.Load(), uint64(len(p.toks))) }

// minter mints workload tokens with the dev issuer on all cores. Tokens
// carry audience "lanyard", a pod binding and the node of the agent that
// will present them, as projected tokens on a real node do.
type minter struct {
	iss      *tokens.DevIssuer
	ids      []identity
	audience string
	seq      int // identity rotation across pools
}

// pools mints total tokens split over one pool per agent node.
func (m *minter) pools(ctx context.Context, nodes []string, total int) ([]*tokenPool, error) {
	per := max(1, (total+len(nodes)-1)/len(nodes))
	out := make([]*tokenPool, len(nodes))
	for a := range out {
		out[a] = &tokenPool{toks: make([]workToken, per)}
	}
	first := m.seq
	m.seq += per * len(nodes)
	g, ctx := errgroup.WithContext(ctx)
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		g.Go(func() error {
			for k := w; k < per*len(nodes); k += workers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				a, j := k%len(nodes), k/len(nodes)
				seq := first + k
				id := seq % len(m.ids)
				tok, err := m.iss.Mint(tokens.DevClaims{
					Namespace:      m.ids[id].namespace,
					ServiceAccount: m.ids[id].serviceAccount,
					Audiences:      []string{m.audience},
					PodName:        fmt.Sprintf("%s-%d", m.ids[id].serviceAccount, seq),
					NodeName:       nodes[a],
				})
				if err != nil {
					return err
				}
				out[a].toks[j] = workToken{token: tok, identity: id}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("mint workload tokens: %w", err)
	}
	return out, nil
}

// poolStats sums the pools: distinct tokens handed out and reuses.
func poolStats(pools []*tokenPool) (fresh, reused uint64) {
	for _, p := range pools {
		fresh += p.fresh()
		reused += p.reused.Load()
	}
	return fresh, reused
}
