package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeagent "github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/ca/tokens"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// stormAgent is one node agent of the storm, in the bench process: the
// real agent core (nodeagent.Client and nodeagent.Manager) without its sockets.
type stormAgent struct {
	node    string
	client  *nodeagent.Client // nil when the signer is not a CA client (tests)
	manager *nodeagent.Manager
	signer  *countingSigner
}

// stormFleet is the storm's agents and what they share: their metrics and
// a log handler that keeps their complaints.
type stormFleet struct {
	agents  []*stormAgent
	reg     *prometheus.Registry
	metrics *nodeagent.Metrics
	log     *warnLog
}

func newStormFleet() *stormFleet {
	reg := prometheus.NewRegistry()
	return &stormFleet{reg: reg, metrics: nodeagent.NewMetrics(reg), log: newWarnLog()}
}

// addAgent puts a Manager on signer (wrapped to be counted) with the
// storm's TTL and the agent's own defaults for everything else.
func (f *stormFleet) addAgent(node string, client *nodeagent.Client, signer nodeagent.Signer, td spiffeid.TrustDomain, ttl time.Duration, bundle *x509bundle.Bundle) error {
	cs := &countingSigner{next: signer}
	m, err := nodeagent.NewManager(nodeagent.ManagerConfig{
		Signer: cs, TrustDomain: td, TTL: ttl, Metrics: f.metrics,
		Logger: slog.New(f.log).With("node", node),
	})
	if err != nil {
		return err
	}
	if bundle != nil {
		m.SetBundle(bundle)
	}
	f.agents = append(f.agents, &stormAgent{node: node, client: client, manager: m, signer: cs})
	return nil
}

// run runs every agent as `lanyard agent` does (agent SVID renewal, the
// bundle stream, the SVID manager) until ctx ends.
func (f *stormFleet) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, a := range f.agents {
		if a.client != nil {
			g.Go(func() error { return a.client.RunAgentSVID(ctx) })
			g.Go(func() error { return a.client.RunBundle(ctx, a.manager.SetBundle, a.manager.CAReachable) })
		}
		g.Go(func() error { return a.manager.Run(ctx) })
	}
	return g.Wait()
}

func (f *stormFleet) close() {
	for _, a := range f.agents {
		if a.client != nil {
			a.client.Close()
		}
	}
}

// stormAgentSpec says how the storm's agents reach and prove themselves to
// the CA.
type stormAgentSpec struct {
	addr      string
	td        spiffeid.TrustDomain
	bundle    *x509bundle.Bundle // bootstrap bundle (bundle.pem)
	namespace string             // agent service account
	name      string
	audience  string
	ttl       time.Duration // workload SVID TTL
}

// stormNode names the node of storm agent i.
func stormNode(i int) string { return fmt.Sprintf("storm-node-%d", i) }

// attestStormAgents makes m agents on nodes storm-node-<i>, each with its
// own dev token (pod lanyard-agent-storm-<i>), and attests them over TLS,
// a few at a time. After that each client speaks to the CA over mTLS with
// its agent SVID.
func attestStormAgents(ctx context.Context, spec stormAgentSpec, iss *tokens.DevIssuer, m int) (*stormFleet, error) {
	f := newStormFleet()
	clients := make([]*nodeagent.Client, m)
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}
	for i := range m {
		node := stormNode(i)
		claims := tokens.DevClaims{
			Namespace: spec.namespace, ServiceAccount: spec.name, Audiences: []string{spec.audience},
			PodName: fmt.Sprintf("lanyard-agent-storm-%d", i), NodeName: node,
		}
		c, err := nodeagent.NewClient(nodeagent.ClientConfig{
			Addr: spec.addr, TrustDomain: spec.td, Bundle: spec.bundle,
			Token:  func() (string, error) { return iss.Mint(claims) },
			Logger: slog.New(f.log).With("node", node),
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("storm agent %s: %w", node, err)
		}
		clients[i] = c
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, c := range clients {
		g.Go(func() error {
			actx, cancel := context.WithTimeout(gctx, rpcTimeout)
			defer cancel()
			if err := c.Attest(actx); err != nil {
				return fmt.Errorf("storm agent %s: %w", stormNode(i), err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeAll()
		return nil, err
	}
	for i, c := range clients {
		if err := f.addAgent(stormNode(i), c, c, spec.td, spec.ttl, spec.bundle); err != nil {
			closeAll()
			return nil, fmt.Errorf("storm agent %s: %w", stormNode(i), err)
		}
	}
	return f, nil
}

// countingSigner wraps an agent's Signer and counts its BatchSignSVIDs
// calls, their sizes and latencies, and every failed call or entry.
type countingSigner struct {
	next nodeagent.Signer

	mu    sync.Mutex
	stats signerStats
}

// signerStats is what a countingSigner saw since it was last taken.
type signerStats struct {
	calls, entries uint64
	canceled       uint64 // calls cut short by the agent's shutdown
	maxBatch       int
	hist           histogram // per call
	fails          failures
}

func (s *countingSigner) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	t0 := time.Now()
	results, err := s.next.BatchSign(ctx, reqs)
	lat := time.Since(t0)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.calls++
	st.entries += uint64(len(reqs))
	st.maxBatch = max(st.maxBatch, len(reqs))
	st.hist.record(lat)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		// The agent is shutting down: not a failure, the manager releases
		// the entries without counting them.
		st.canceled++
	case err != nil:
		st.fails.add("call "+status.Code(err).String(), status.Convert(err).Message(), uint64(len(reqs)))
	default:
		for _, r := range results {
			if r.GetCode() != 0 {
				st.fails.add("entry "+codes.Code(r.GetCode()).String(), r.GetMessage(), 1)
			}
		}
	}
	return results, err
}

// takeInto adds the stats gathered since the last take to u and starts
// afresh, without allocating.
func (s *countingSigner) takeInto(u *usageSum) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u.add(&s.stats)
	s.stats = signerStats{}
}

// failures counts failures by kind and keeps one message per kind.
type failures struct {
	counts  map[string]uint64
	samples map[string]string
}

func (f *failures) add(kind, msg string, n uint64) {
	if f.counts == nil {
		f.counts, f.samples = map[string]uint64{}, map[string]string{}
	}
	f.counts[kind] += n
	if _, ok := f.samples[kind]; !ok {
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		f.samples[kind] = msg
	}
}

func (f *failures) merge(o failures) {
	for k, n := range o.counts {
		f.add(k, o.samples[k], n)
	}
}

func (f *failures) total() uint64 {
	var n uint64
	for _, c := range f.counts {
		n += c
	}
	return n
}

// kinds returns the kinds in order.
func (f *failures) kinds() []string {
	out := make([]string, 0, len(f.counts))
	for k := range f.counts {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// warnLog is a slog handler that counts warnings and errors by message
// (and gRPC code, when the record has one) and keeps the first of each:
// the agents' complaints, for the report.
type warnLog struct {
	mu    sync.Mutex
	fails failures
	attrs []slog.Attr
	root  *warnLog // the shared state; nil on the root itself
}

func newWarnLog() *warnLog { return &warnLog{} }

func (h *warnLog) shared() *warnLog {
	if h.root != nil {
		return h.root
	}
	return h
}

func (h *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	kind := r.Level.String() + " " + r.Message
	add := func(a slog.Attr) bool {
		if a.Key == "code" {
			kind += " " + a.Value.String()
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	root := h.shared()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.fails.add(kind, strings.TrimSpace(b.String()), 1)
	return nil
}

func (h *warnLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnLog{attrs: append(slices.Clip(h.attrs), as...), root: h.shared()}
}

func (h *warnLog) WithGroup(string) slog.Handler { return h }

// snapshot returns what was logged so far.
func (h *warnLog) snapshot() failures {
	root := h.shared()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out failures
	out.merge(root.fails)
	return out
}

// counterTotals sums the counter name on g by the value of its label
// label ("" for a counter without labels).
func counterTotals(g prometheus.Gatherer, name, label string) (map[string]float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather agent metrics: %w", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					v = lp.GetValue()
				}
			}
			out[v] += m.GetCounter().GetValue()
		}
	}
	return out, nil
}
