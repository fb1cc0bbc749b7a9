package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/ca/tokens"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// rpcTimeout bounds one call; the load itself ends at its deadline.
const rpcTimeout = 30 * time.Second

// csrPool makes n P-256 keys and their DER CSRs, without any SAN: the CA
// sets the SPIFFE ID.
func csrPool(ctx context.Context, n int) ([][]byte, error) {
	out := make([][]byte, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range out {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			out[i], err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("make CSRs: %w", err)
	}
	return out, nil
}

// agent is an attested node agent and its mTLS connection to the CA.
type agent struct {
	node   string
	id     spiffeid.ID
	conn   *grpc.ClientConn
	client cav1.CAServiceClient
}

// agentSpec says how the benchmark's agents prove themselves.
type agentSpec struct {
	addr       string
	roots      *x509.CertPool
	serverName string
	namespace  string // agent service account
	name       string
	audience   string
}

// attestAgents attests n agents on nodes bench-node-<i> over
// server-authenticated TLS, then dials the CA again for each with mTLS
// using its agent SVID. It returns the agents and the trust domain the CA
// answered with.
func attestAgents(ctx context.Context, spec agentSpec, iss *tokens.DevIssuer, n int) ([]*agent, spiffeid.TrustDomain, error) {
	var td spiffeid.TrustDomain
	conn, err := grpc.NewClient(spec.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: spec.roots, ServerName: spec.serverName, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		return nil, td, fmt.Errorf("dial CA: %w", err)
	}
	defer conn.Close()
	client := cav1.NewCAServiceClient(conn)
	agents := make([]*agent, 0, n)
	fail := func(err error) ([]*agent, spiffeid.TrustDomain, error) {
		closeAgents(agents)
		return nil, td, err
	}
	for i := range n {
		node := fmt.Sprintf("bench-node-%d", i)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fail(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return fail(err)
		}
		tok, err := iss.Mint(tokens.DevClaims{
			Namespace: spec.namespace, ServiceAccount: spec.name, Audiences: []string{spec.audience},
			PodName: fmt.Sprintf("lanyard-agent-%d", i), NodeName: node,
		})
		if err != nil {
			return fail(fmt.Errorf("agent token: %w", err))
		}
		actx, cancel := context.WithTimeout(ctx, rpcTimeout)
		resp, err := client.AttestAgent(actx, &cav1.AttestAgentRequest{Token: tok, Csr: csr})
		cancel()
		if err != nil {
			return fail(fmt.Errorf("attest agent %s: %w", node, err))
		}
		if td, err = spiffeid.TrustDomainFromString(resp.GetBundle().GetTrustDomain()); err != nil {
			return fail(fmt.Errorf("attest agent %s: bundle trust domain: %w", node, err))
		}
		chain := resp.GetSvid().GetCertChain()
		leaf, err := verifyChain(chain, spec.roots, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return fail(fmt.Errorf("attest agent %s: agent SVID: %w", node, err))
		}
		want, err := spiffeid.FromSegments(td, "lanyard", "agent", "dev", node)
		if err != nil {
			return fail(err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() {
			return fail(fmt.Errorf("attest agent %s: agent SVID names %v, want %s", node, leaf.URIs, want))
		}
		mconn, err := grpc.NewClient(spec.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: spec.roots, ServerName: spec.serverName, MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key, Leaf: leaf}},
		})))
		if err != nil {
			return fail(fmt.Errorf("dial CA as agent %s: %w", node, err))
		}
		agents = append(agents, &agent{node: node, id: want, conn: mconn, client: cav1.NewCAServiceClient(mconn)})
	}
	return agents, td, nil
}

func closeAgents(agents []*agent) {
	for _, a := range agents {
		a.conn.Close()
	}
}

// verifyChain parses a DER chain (leaf first) and verifies it against roots.
func verifyChain(chain [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// loadResult is what one run of the load measured.
type loadResult struct {
	callers, batch int
	elapsed        time.Duration
	steadyRate     float64 // entries answered per second over the second half of the run
	rpcs           uint64
	certs          uint64 // entries answered with the expected, well-formed SVID
	entries        uint64 // entries sent in calls that completed or failed
	hist           histogram
	failures       map[string]uint64 // by kind
	samples        map[string]string // one message per kind
}

func (r *loadResult) failed() uint64 {
	var n uint64
	for _, c := range r.failures {
		n += c
	}
	return n
}

func (r *loadResult) fail(kind, msg string, n uint64) {
	if r.failures == nil {
		r.failures, r.samples = make(map[string]uint64), make(map[string]string)
	}
	r.failures[kind] += n
	if _, ok := r.samples[kind]; !ok {
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		r.samples[kind] = msg
	}
}

func (r *loadResult) merge(o *loadResult) {
	r.rpcs += o.rpcs
	r.certs += o.certs
	r.entries += o.entries
	r.hist.merge(&o.hist)
	for k, n := range o.failures {
		r.fail(k, o.samples[k], n)
	}
}

// load is one run of C callers sending batches of B entries until a deadline.
type load struct {
	agents   []*agent
	pools    []*tokenPool // one per agent
	csrs     [][]byte
	expected []string // SPIFFE ID by identity index
	roots    *x509.CertPool
	callers  int
	batch    int
}

// run drives the CA for d and returns when every caller has finished its
// last call. Caller i speaks as agent i mod len(agents) and takes tokens
// from that agent's pool. Calls in flight at the deadline complete and are
// counted; no call starts after it.
func (l *load) run(ctx context.Context, d time.Duration) *loadResult {
	results := make([]*loadResult, l.callers)
	answered := new(atomic.Uint64)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := range l.callers {
		a := i % len(l.agents)
		c := &caller{load: l, client: l.agents[a].client, pool: l.pools[a], csrNext: i * 7, answered: answered, res: &loadResult{}}
		results[i] = c.res
		wg.Go(func() { c.run(ctx, deadline) })
	}
	// Sample the answers over the second half: steady state, without the
	// ramp-up of the first calls or the drain after the deadline.
	var steady float64
	if sleepUntil(ctx, start.Add(d/2)) {
		t1, n1 := time.Now(), answered.Load()
		if sleepUntil(ctx, deadline) {
			if dt := time.Since(t1).Seconds(); dt > 0 {
				steady = float64(answered.Load()-n1) / dt
			}
		}
	}
	wg.Wait()
	total := &loadResult{callers: l.callers, batch: l.batch, elapsed: time.Since(start), steadyRate: steady}
	for _, r := range results {
		total.merge(r)
	}
	return total
}

// caller is one concurrent client of a load run.
type caller struct {
	*load
	client   cav1.CAServiceClient
	pool     *tokenPool
	answered *atomic.Uint64 // entries answered, shared by the callers of a run
	csrNext  int
	verified bool // one full chain verification per caller
	res      *loadResult
}

func (c *caller) run(ctx context.Context, deadline time.Time) {
	ids := make([]string, c.batch)
	entries := make([]*cav1.SVIDRequest, c.batch)
	for j := range entries {
		ids[j] = strconv.Itoa(j)
		entries[j] = &cav1.SVIDRequest{Id: ids[j]}
	}
	req := &cav1.BatchSignSVIDsRequest{Requests: entries}
	used := make([]int, c.batch) // identity index of each entry
	for ctx.Err() == nil && time.Now().Before(deadline) {
		for j, e := range entries {
			t := c.pool.take()
			used[j] = t.identity
			e.Caller = &cav1.SVIDRequest_Token{Token: t.token}
			e.Csr = c.csrs[c.csrNext%len(c.csrs)]
			c.csrNext++
		}
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		t0 := time.Now()
		resp, err := c.client.BatchSignSVIDs(rctx, req)
		lat := time.Since(t0)
		cancel()
		c.res.entries += uint64(c.batch)
		if err != nil {
			if ctx.Err() != nil {
				c.res.entries -= uint64(c.batch) // interrupted, not answered
				return
			}
			st := status.Convert(err)
			c.res.fail("call "+st.Code().String(), st.Message(), uint64(c.batch))
			pause(ctx, deadline, 50*time.Millisecond) // do not spin against a failing CA
			continue
		}
		c.res.rpcs++
		c.res.hist.record(lat)
		c.answered.Add(uint64(c.batch))
		c.check(resp.GetResults(), ids, used)
	}
}

// check counts each result: success only with code 0 and a leaf that
// parses and names the expected SPIFFE ID.
func (c *caller) check(results []*cav1.SVIDResult, ids []string, used []int) {
	if len(results) != len(ids) {
		c.res.fail("wrong number of results", fmt.Sprintf("%d results for %d entries", len(results), len(ids)), uint64(len(ids)))
		return
	}
	for j, r := range results {
		want := c.expected[used[j]]
		switch {
		case r.GetId() != ids[j]:
			c.res.fail("result id mismatch", fmt.Sprintf("result %d has id %q", j, r.GetId()), 1)
		case r.GetCode() != 0:
			c.res.fail("entry "+codes.Code(r.GetCode()).String(), r.GetMessage(), 1)
		case r.GetSvid() == nil || len(r.GetSvid().GetCertChain()) == 0:
			c.res.fail("success without SVID", "", 1)
		default:
			chain := r.GetSvid().GetCertChain()
			var leaf *x509.Certificate
			var err error
			if !c.verified {
				leaf, err = verifyChain(chain, c.roots, x509.ExtKeyUsageClientAuth)
				c.verified = err == nil
			} else {
				leaf, err = x509.ParseCertificate(chain[0])
			}
			switch {
			case err != nil:
				c.res.fail("bad leaf", err.Error(), 1)
			case len(leaf.URIs) != 1 || leaf.URIs[0].String() != want || r.GetSvid().GetSpiffeId() != want:
				c.res.fail("wrong SPIFFE ID", fmt.Sprintf("got %v (spiffe_id %q), want %s", leaf.URIs, r.GetSvid().GetSpiffeId(), want), 1)
			default:
				c.res.certs++
			}
		}
	}
}

// sleepUntil sleeps until t and reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// pause sleeps for d, or less at the deadline or cancellation.
func pause(ctx context.Context, deadline time.Time, d time.Duration) {
	d = min(d, time.Until(deadline))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
