package bench

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	nodeagent "github.com/lanyard-id/lanyard/agent"
)

// stormNamespaces is how many namespaces the storm's workloads are spread
// over; each workload has a service account of its own.
const stormNamespaces = 50

// stormIdentity names workload i of the storm.
func stormIdentity(i int) (namespace, serviceAccount string) {
	return fmt.Sprintf("storm-ns-%02d", i%stormNamespaces), fmt.Sprintf("w-%05d", i)
}

// stormWorkload is workload i as the agent's unix attestor would hand it
// to the manager.
func stormWorkload(td spiffeid.TrustDomain, i int) (nodeagent.Workload, error) {
	ns, sa := stormIdentity(i)
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return nodeagent.Workload{}, err
	}
	return nodeagent.Workload{ID: id, Attested: &nodeagent.Attested{Attestor: "unix", Namespace: ns, ServiceAccount: sa}}, nil
}

// split spreads n workloads over m agents as evenly as possible: agent a
// holds workloads [starts[a], starts[a+1]); the result has m+1 elements.
func split(n, m int) []int {
	starts := make([]int, m+1)
	for a := range m {
		starts[a+1] = starts[a] + n/m
		if a < n%m {
			starts[a+1]++
		}
	}
	return starts
}

// stormSub is one subscription of the storm and what its watcher saw.
// Each field is written once, by the watcher; the tracker's counters
// publish them.
type stormSub struct {
	sub       nodeagent.Subscription
	fetched   time.Time // first SVID seen
	notBefore time.Time // of the first SVID
	notAfter  time.Time
	serial    *big.Int
	renewed   time.Time // an SVID with another serial seen
	err       error     // the subscription reported an error
}

// tracker watches every subscription of the storm.
type tracker struct {
	subs                   []stormSub
	fetched, renewed       atomic.Int64
	allFetched, allRenewed chan struct{}
	failed                 chan struct{} // closed at the first subscription error
	failOnce               sync.Once
}

func newTracker(n int) *tracker {
	return &tracker{
		subs:       make([]stormSub, n),
		allFetched: make(chan struct{}), allRenewed: make(chan struct{}), failed: make(chan struct{}),
	}
}

// watch follows subscription i until ctx ends.
func (t *tracker) watch(ctx context.Context, i int) {
	s := &t.subs[i]
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.sub.Updates():
		}
		svid, err := s.sub.SVID()
		t.observe(i, svid, err, time.Now())
	}
}

// observe records what subscription i showed at now: its first SVID, the
// first SVID with another serial (the renewal), or an error.
func (t *tracker) observe(i int, svid *x509svid.SVID, err error, now time.Time) {
	s := &t.subs[i]
	switch {
	case err != nil:
		if s.err == nil {
			s.err = err
			t.failOnce.Do(func() { close(t.failed) })
		}
	case svid == nil: // still being fetched
	case s.serial == nil:
		leaf := svid.Certificates[0]
		s.fetched, s.serial, s.notBefore, s.notAfter = now, leaf.SerialNumber, leaf.NotBefore, leaf.NotAfter
		if int(t.fetched.Add(1)) == len(t.subs) {
			close(t.allFetched)
		}
	case s.renewed.IsZero() && svid.Certificates[0].SerialNumber.Cmp(s.serial) != 0:
		s.renewed = now
		if int(t.renewed.Add(1)) == len(t.subs) {
			close(t.allRenewed)
		}
	}
}

// dueBounds is when the agent may renew an SVID it got at got: half-life
// ± 10 %, counted from receipt, as nodeagent.Manager does.
func dueBounds(got, notBefore, notAfter time.Time) (earliest, latest time.Time) {
	start := notBefore
	if got.After(start) && got.Before(notAfter) {
		start = got
	}
	half := notAfter.Sub(start) / 2
	return start.Add(half - half/10), start.Add(half + half/10)
}

// timeline is what the tracker saw, summarised. Times are absolute.
type timeline struct {
	fetched, renewed            int       // subscriptions with a first SVID, with a renewal
	firstFetch, lastFetch       time.Time // first SVIDs seen
	dueFrom, dueTo              time.Time // the renewals' due window: half-life ± 10 % of each
	firstRenew, lastRenew       time.Time
	earlyRenewals               int           // renewed before every first SVID was in
	late                        int           // renewed after the latest time it was due
	lateP50, lateP99, lateMax   time.Duration // renewal minus latest due time, over all renewals
	expiredFirst                int           // renewed after the first SVID expired, or never before then
	lastNotAfter, firstNotAfter time.Time
	errs                        int // subscriptions that reported an error
	sampleErr                   error
}

// dueWindow is the renewals' due window: from the earliest to the latest
// time one of the first SVIDs may be renewed. Call it once allFetched is
// closed: the counter publishes the fields it reads.
func (t *tracker) dueWindow() (from, to time.Time) {
	for i := range t.subs {
		s := &t.subs[i]
		f, l := dueBounds(s.fetched, s.notBefore, s.notAfter)
		from, to = minTime(from, f), maxTime(to, l)
	}
	return from, to
}

// summarise reads every subscription; call it once no watcher runs.
func (t *tracker) summarise() timeline {
	var tl timeline
	var lateness []time.Duration
	for i := range t.subs {
		s := &t.subs[i]
		if s.err != nil {
			tl.errs++
			if tl.sampleErr == nil {
				tl.sampleErr = s.err
			}
		}
		if s.serial == nil {
			continue
		}
		tl.fetched++
		tl.firstFetch = minTime(tl.firstFetch, s.fetched)
		tl.lastFetch = maxTime(tl.lastFetch, s.fetched)
		tl.firstNotAfter = minTime(tl.firstNotAfter, s.notAfter)
		tl.lastNotAfter = maxTime(tl.lastNotAfter, s.notAfter)
		from, to := dueBounds(s.fetched, s.notBefore, s.notAfter)
		tl.dueFrom, tl.dueTo = minTime(tl.dueFrom, from), maxTime(tl.dueTo, to)
		if s.renewed.IsZero() {
			continue
		}
		if !s.renewed.Before(s.notAfter) {
			tl.expiredFirst++
		}
		tl.renewed++
		tl.firstRenew = minTime(tl.firstRenew, s.renewed)
		tl.lastRenew = maxTime(tl.lastRenew, s.renewed)
		late := s.renewed.Sub(to)
		if late > 0 {
			tl.late++
		}
		lateness = append(lateness, late)
	}
	for i := range t.subs {
		if r := t.subs[i].renewed; !r.IsZero() && r.Before(tl.lastFetch) {
			tl.earlyRenewals++
		}
	}
	if len(lateness) > 0 {
		slices.Sort(lateness)
		tl.lateP50, tl.lateP99, tl.lateMax = nearestRank(lateness, 50), nearestRank(lateness, 99), lateness[len(lateness)-1]
	}
	return tl
}

// nearestRank is the q-th percentile (0 < q ≤ 100) of sorted values.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	r := int(q / 100 * float64(len(sorted)))
	if float64(r) < q/100*float64(len(sorted)) {
		r++
	}
	return sorted[min(max(r, 1), len(sorted))-1]
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
