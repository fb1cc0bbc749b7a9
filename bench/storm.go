package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// The rotation storm: N workloads on M node agents in the bench process
// (the real nodeagent.Client and nodeagent.Manager, without their sockets) fetch
// their SVIDs all at once (the cold start), hold them, and renew them
// together when they come due at half-life ± 10 % (the storm).

// minStormTTL is the shortest storm TTL: below it the cold start of a
// large storm would run into the first renewals.
const minStormTTL = 5 * time.Second

// stormPlan is the storm's shape.
type stormPlan struct {
	workloads, agents int
	ttl               time.Duration
	td                spiffeid.TrustDomain
}

// stormProbe reads the CA's CPU time and metrics (and the bench's CPU
// time); nil when there is no CA process (tests).
type stormProbe func(ctx context.Context) (snapshot, error)

// memSample is the bench process's heap after a full collection.
type memSample struct{ inUse, alloc uint64 }

func heapAfterGC() memSample {
	runtime.GC()
	runtime.GC() // the first may leave finalizer-held objects
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{inUse: ms.HeapInuse, alloc: ms.HeapAlloc}
}

// stormUsage is one stretch of the storm seen from both sides.
type stormUsage struct {
	from, to snapshot // CA (and bench) counters
	agents   usageSum // the agents' BatchSign calls
}

// usageSum adds up the agents' signer stats of one stretch.
type usageSum struct {
	agents                   int
	calls, entries, canceled uint64
	maxBatch                 int
	perAgentMin, perAgentMax uint64
	hist                     histogram // per call
	fails                    failures
}

// add adds one agent's stats.
func (s *usageSum) add(st *signerStats) {
	if s.agents == 0 || st.calls < s.perAgentMin {
		s.perAgentMin = st.calls
	}
	s.agents++
	s.calls += st.calls
	s.entries += st.entries
	s.canceled += st.canceled
	s.maxBatch = max(s.maxBatch, st.maxBatch)
	s.perAgentMax = max(s.perAgentMax, st.calls)
	s.hist.merge(&st.hist)
	s.fails.merge(st.fails)
}

// stormResult is what the storm measured.
type stormResult struct {
	plan            stormPlan
	start           time.Time // subscriptions began
	tl              timeline
	incomplete      []string // why a phase did not complete
	cold, between   stormUsage
	storm           stormUsage
	stormMeasured   bool // the storm phase ran (the cold start completed)
	mem0, mem1      memSample
	mem2            memSample
	renewFailures   map[string]float64 // the agents' own count, by gRPC code
	rotations       float64
	agentLog        failures // the agents' warnings and errors
	caPID           int
	canceledAtClose uint64
}

// runStorm runs the fleet (attested, not yet running) through the cold
// start and the storm. It returns an error only when the storm could not
// be run; what went wrong during it is in the result.
func runStorm(ctx context.Context, f *stormFleet, plan stormPlan, probe stormProbe, progress func(string, ...any)) (_ *stormResult, err error) {
	if probe == nil {
		probe = func(context.Context) (snapshot, error) { return snapshot{}, nil }
	}
	res := &stormResult{plan: plan}
	starts := split(plan.workloads, len(f.agents))
	tr := newTracker(plan.workloads)

	actx, stop := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- f.run(actx) }()
	var watchers sync.WaitGroup
	defer func() {
		stop()
		watchers.Wait()
		if ferr := <-fleetDone; ferr != nil && err == nil {
			err = fmt.Errorf("storm agents: %w", ferr)
		}
		var last usageSum // calls cut short by the shutdown
		f.collect(&last)
		res.canceledAtClose = last.canceled
		res.tl = tr.summarise()
	}()

	res.mem0 = heapAfterGC()
	if res.cold.from, err = probe(ctx); err != nil {
		return nil, err
	}
	f.collect(new(usageSum))

	// Phase 1, the cold start: every workload subscribes at once.
	progress("storm: cold start, %d workloads subscribe on %d agents (SVID TTL %s)", plan.workloads, len(f.agents), plan.ttl)
	res.start = time.Now()
	// The subscriptions live as long as the storm (actx), not as long as
	// this errgroup: a subscription ends with the context it was made with.
	var g errgroup.Group
	for a, ag := range f.agents {
		g.Go(func() error {
			for i := starts[a]; i < starts[a+1]; i++ {
				w, err := stormWorkload(plan.td, i)
				if err != nil {
					return err
				}
				sub, err := ag.manager.Subscribe(actx, w)
				if err != nil {
					return fmt.Errorf("subscribe %s on %s: %w", w.ID, ag.node, err)
				}
				tr.subs[i].sub = sub
				watchers.Go(func() { tr.watch(actx, i) })
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	// Past the TTL the first SVIDs would be expiring: the cold start has
	// failed by then.
	if !waitPhase(ctx, tr.allFetched, tr.failed, res.start.Add(plan.ttl)) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.incomplete = append(res.incomplete, fmt.Sprintf("cold start: %d of %d subscriptions had an SVID after %s (or one reported an error)",
			tr.fetched.Load(), plan.workloads, time.Since(res.start).Round(time.Millisecond)))
		return res, res.finish(ctx, f, probe, &res.cold)
	}
	if res.cold.to, err = probe(ctx); err != nil {
		return nil, err
	}
	res.mem1 = heapAfterGC() // before anything of the bench's own is made
	f.collect(&res.cold.agents)
	dueFrom, dueTo := tr.dueWindow()
	progress("storm: all %d SVIDs in after %s; renewals due from %s to %s from now",
		plan.workloads, time.Since(res.start).Round(time.Millisecond), time.Until(dueFrom).Round(time.Millisecond), time.Until(dueTo).Round(time.Millisecond))

	// Phase 2, the storm: wait until just before the first renewal is due,
	// then until every subscription has seen a new serial, or the first
	// SVIDs have all expired.
	if !sleepUntil(ctx, dueFrom.Add(-500*time.Millisecond)) {
		return nil, ctx.Err()
	}
	if res.storm.from, err = probe(ctx); err != nil {
		return nil, err
	}
	f.collect(&res.between.agents)
	res.stormMeasured = true
	_, lastNotAfter := tr.notAfterRange()
	if !waitPhase(ctx, tr.allRenewed, tr.failed, lastNotAfter.Add(time.Second)) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.incomplete = append(res.incomplete, fmt.Sprintf("storm: %d of %d subscriptions renewed before the first SVIDs expired (or one reported an error)",
			tr.renewed.Load(), plan.workloads))
	}
	return res, res.finish(ctx, f, probe, &res.storm)
}

// finish closes the stretch u, measures the heap and reads the agents'
// metrics and log; runStorm summarises the subscriptions once their
// watchers have stopped.
func (r *stormResult) finish(ctx context.Context, f *stormFleet, probe stormProbe, u *stormUsage) error {
	var err error
	if u.to, err = probe(ctx); err != nil {
		return err
	}
	r.mem2 = heapAfterGC()
	f.collect(&u.agents)
	if r.renewFailures, err = counterTotals(f.reg, "lanyard_agent_renew_failures_total", "code"); err != nil {
		return err
	}
	rot, err := counterTotals(f.reg, "lanyard_agent_rotations_total", "")
	if err != nil {
		return err
	}
	r.rotations = rot[""]
	r.agentLog = f.log.snapshot()
	return nil
}

// collect adds every agent's signer stats to u and resets them.
func (f *stormFleet) collect(u *usageSum) {
	for _, a := range f.agents {
		a.signer.takeInto(u)
	}
}

// notAfterRange is the earliest and latest expiry of the first SVIDs;
// call it once allFetched is closed.
func (t *tracker) notAfterRange() (first, last time.Time) {
	for i := range t.subs {
		first, last = minTime(first, t.subs[i].notAfter), maxTime(last, t.subs[i].notAfter)
	}
	return first, last
}

// waitPhase waits for done and reports true, or false once failed is
// closed, the deadline passes or ctx ends.
func waitPhase(ctx context.Context, done, failed <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-failed:
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// storm attests the storm's agents against the CA and runs the storm,
// reading the CA's CPU time and metrics around each phase.
func (r *runner) storm(ctx context.Context, iss *tokens.DevIssuer, td spiffeid.TrustDomain, bundlePEM []byte) (*stormResult, error) {
	bundle, err := x509bundle.Parse(td, bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("storm: bootstrap bundle: %w", err)
	}
	r.progress("storm: attesting %d agents", r.cfg.StormAgents)
	f, err := attestStormAgents(ctx, stormAgentSpec{
		addr: r.ca.grpcAddr, td: td, bundle: bundle,
		namespace: r.cfg.AgentNamespace, name: r.cfg.AgentServiceAccount, audience: r.cfg.Audience,
		ttl: r.cfg.StormTTL,
	}, iss, r.cfg.StormAgents)
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	defer f.close()
	res, err := runStorm(ctx, f, stormPlan{workloads: r.cfg.StormWorkloads, agents: r.cfg.StormAgents, ttl: r.cfg.StormTTL, td: td}, r.snapshot, r.progress)
	if err != nil {
		return nil, err
	}
	res.caPID = r.ca.pid()
	return res, nil
}
