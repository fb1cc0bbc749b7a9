package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeagent "github.com/lanyard-id/lanyard/agent"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

var stormTD = spiffeid.RequireTrustDomainFromString("cluster.local")

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		n, m int
		want []int
	}{
		{n: 10, m: 3, want: []int{0, 4, 7, 10}},
		{n: 6, m: 3, want: []int{0, 2, 4, 6}},
		{n: 5, m: 5, want: []int{0, 1, 2, 3, 4, 5}},
		{n: 7, m: 1, want: []int{0, 7}},
	} {
		t.Run(fmt.Sprintf("%d over %d", tt.n, tt.m), func(t *testing.T) {
			require.Equal(t, tt.want, split(tt.n, tt.m))
		})
	}
	s := split(10000, 100)
	require.Len(t, s, 101)
	require.Equal(t, 10000, s[100])
	for a := range 100 {
		require.Equal(t, 100, s[a+1]-s[a])
	}
}

func TestStormWorkloadsAreDistinctUnixIdentities(t *testing.T) {
	seen := map[spiffeid.ID]bool{}
	namespaces := map[string]bool{}
	for i := range 1000 {
		w, err := stormWorkload(stormTD, i)
		require.NoError(t, err)
		require.Empty(t, w.Token)
		require.Equal(t, "unix", w.Attested.Attestor)
		require.Equal(t, fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", w.Attested.Namespace, w.Attested.ServiceAccount), w.ID.String())
		require.False(t, seen[w.ID], "workload %d repeats %s", i, w.ID)
		seen[w.ID] = true
		namespaces[w.Attested.Namespace] = true
	}
	require.Len(t, namespaces, stormNamespaces)
	ns, sa := stormIdentity(10051)
	require.Equal(t, "storm-ns-01", ns)
	require.Equal(t, "w-10051", sa)
}

func TestDueBounds(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name             string
		got, nb, na      time.Time
		wantFrom, wantTo time.Time
	}{
		{
			name: "from receipt, not the backdated NotBefore",
			got:  t0, nb: t0.Add(-10 * time.Second), na: t0.Add(30 * time.Second),
			wantFrom: t0.Add(13500 * time.Millisecond), wantTo: t0.Add(16500 * time.Millisecond),
		},
		{
			name: "receipt before NotBefore (clock skew): from NotBefore",
			got:  t0.Add(-time.Minute), nb: t0, na: t0.Add(20 * time.Second),
			wantFrom: t0.Add(9 * time.Second), wantTo: t0.Add(11 * time.Second),
		},
		{
			name: "receipt after expiry: from NotBefore",
			got:  t0.Add(time.Minute), nb: t0, na: t0.Add(20 * time.Second),
			wantFrom: t0.Add(9 * time.Second), wantTo: t0.Add(11 * time.Second),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			from, to := dueBounds(tt.got, tt.nb, tt.na)
			require.Equal(t, tt.wantFrom, from)
			require.Equal(t, tt.wantTo, to)
		})
	}
}

// fakeSVID is an SVID with only what the tracker reads.
func fakeSVID(serial int64, nb, na time.Time) *x509svid.SVID {
	return &x509svid.SVID{Certificates: []*x509.Certificate{{SerialNumber: big.NewInt(serial), NotBefore: nb, NotAfter: na}}}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestTrackerObserve(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	nb, na := t0.Add(-10*time.Second), t0.Add(30*time.Second)
	tr := newTracker(2)

	tr.observe(0, nil, nil, t0) // still fetching
	require.Zero(t, tr.fetched.Load())

	tr.observe(0, fakeSVID(1, nb, na), nil, t0.Add(time.Second))
	tr.observe(0, fakeSVID(1, nb, na), nil, t0.Add(2*time.Second)) // a bundle update: same serial
	require.EqualValues(t, 1, tr.fetched.Load())
	require.False(t, closed(tr.allFetched))
	require.Equal(t, t0.Add(time.Second), tr.subs[0].fetched)

	tr.observe(1, fakeSVID(2, nb, na), nil, t0.Add(3*time.Second))
	require.True(t, closed(tr.allFetched))
	require.Zero(t, tr.renewed.Load())

	tr.observe(0, fakeSVID(3, nb, na.Add(time.Minute)), nil, t0.Add(16*time.Second))
	tr.observe(0, fakeSVID(4, nb, na.Add(time.Minute)), nil, t0.Add(17*time.Second)) // only the first renewal counts
	require.Equal(t, t0.Add(16*time.Second), tr.subs[0].renewed)
	require.False(t, closed(tr.allRenewed))
	tr.observe(1, fakeSVID(5, nb, na.Add(time.Minute)), nil, t0.Add(17*time.Second))
	require.True(t, closed(tr.allRenewed))

	require.False(t, closed(tr.failed))
	denied := fmt.Errorf("%w: PermissionDenied", nodeagent.ErrDenied)
	tr.observe(1, nil, denied, t0.Add(18*time.Second))
	tr.observe(1, nil, errors.New("later"), t0.Add(19*time.Second)) // the first error is kept, closing once
	require.True(t, closed(tr.failed))
	require.ErrorIs(t, tr.subs[1].err, nodeagent.ErrDenied)
}

func TestTrackerSummarise(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	sub := func(fetchedAt, renewedAt time.Duration) stormSub {
		s := stormSub{
			fetched: t0.Add(fetchedAt), notBefore: t0.Add(fetchedAt - 10*time.Second), notAfter: t0.Add(fetchedAt + 20*time.Second),
			serial: big.NewInt(1),
		}
		if renewedAt > 0 {
			s.renewed = t0.Add(renewedAt)
		}
		return s
	}
	// SVIDs of 20 s: due from 9 s to 11 s after receipt.
	tr := newTracker(5)
	tr.subs[0] = sub(0, 10*time.Second)                                // on time, 1 s early
	tr.subs[1] = sub(time.Second, 12*time.Second+500*time.Millisecond) // 0.5 s late
	tr.subs[2] = sub(2*time.Second, 24*time.Second)                    // after expiry (22 s)
	tr.subs[3] = sub(3*time.Second, 0)                                 // never renewed
	tr.subs[4] = stormSub{err: errors.New("denied")}                   // never fetched
	dueFrom, dueTo := (&tracker{subs: tr.subs[:4]}).dueWindow()        // the fifth was never fetched
	require.Equal(t, t0.Add(9*time.Second), dueFrom)
	require.Equal(t, t0.Add(14*time.Second), dueTo)

	tl := tr.summarise()
	require.Equal(t, 4, tl.fetched)
	require.Equal(t, 3, tl.renewed)
	require.Equal(t, 1, tl.expiredFirst, "renewed after expiry")
	require.Equal(t, 1, tl.errs)
	require.EqualError(t, tl.sampleErr, "denied")
	require.Equal(t, t0, tl.firstFetch)
	require.Equal(t, t0.Add(3*time.Second), tl.lastFetch)
	require.Equal(t, t0.Add(10*time.Second), tl.firstRenew)
	require.Equal(t, t0.Add(24*time.Second), tl.lastRenew)
	require.Equal(t, dueFrom, tl.dueFrom)
	require.Equal(t, dueTo, tl.dueTo)
	require.Equal(t, 2, tl.late)
	require.Equal(t, 500*time.Millisecond, tl.lateP50) // of -1 s, +0.5 s, +11 s
	require.Equal(t, 11*time.Second, tl.lateP99)
	require.Equal(t, 11*time.Second, tl.lateMax)
	require.Zero(t, tl.earlyRenewals)

	// A renewal before the last first SVID: the phases overlapped.
	tr = newTracker(2)
	tr.subs[0] = sub(0, 10*time.Second)
	tr.subs[1] = sub(11*time.Second, 21*time.Second)
	require.Equal(t, 1, tr.summarise().earlyRenewals)
}

func TestNearestRank(t *testing.T) {
	v := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(5), nearestRank(v, 50))
	require.Equal(t, time.Duration(10), nearestRank(v, 99))
	require.Equal(t, time.Duration(1), nearestRank(v, 1))
	require.Equal(t, time.Duration(7), nearestRank([]time.Duration{7}, 50))
}

// scriptedSigner answers BatchSign from a function, and blocks when asked.
type scriptedSigner struct {
	answer func(reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error)
}

func (s *scriptedSigner) BatchSign(ctx context.Context, reqs []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
	if s.answer == nil {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return s.answer(reqs)
}

func TestCountingSigner(t *testing.T) {
	reqs := func(n int) []*cav1.SVIDRequest {
		out := make([]*cav1.SVIDRequest, n)
		for i := range out {
			out[i] = &cav1.SVIDRequest{Id: fmt.Sprint(i)}
		}
		return out
	}
	ok := &scriptedSigner{answer: func(r []*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
		res := make([]*cav1.SVIDResult, len(r))
		for i := range r {
			res[i] = &cav1.SVIDResult{Id: r[i].Id}
		}
		res[0].Code, res[0].Message = uint32(codes.ResourceExhausted), "128 signing operations in flight"
		return res, nil
	}}
	cs := &countingSigner{next: ok}
	ctx := context.Background()
	_, err := cs.BatchSign(ctx, reqs(3))
	require.NoError(t, err)
	_, err = cs.BatchSign(ctx, reqs(5))
	require.NoError(t, err)

	cs.next = &scriptedSigner{answer: func([]*cav1.SVIDRequest) ([]*cav1.SVIDResult, error) {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}}
	_, err = cs.BatchSign(ctx, reqs(4))
	require.Error(t, err)

	cs.next = &scriptedSigner{} // blocks until canceled: the agent stopping
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cs.BatchSign(cctx, reqs(2))
	require.Error(t, err)

	var u usageSum
	cs.takeInto(&u)
	require.EqualValues(t, 4, u.calls)
	require.EqualValues(t, 14, u.entries)
	require.EqualValues(t, 1, u.canceled)
	require.Equal(t, 5, u.maxBatch)
	require.EqualValues(t, 4, u.hist.count())
	require.Equal(t, map[string]uint64{"entry ResourceExhausted": 2, "call Unavailable": 4}, u.fails.counts)
	require.Equal(t, "connection refused", u.fails.samples["call Unavailable"])
	require.EqualValues(t, 6, u.fails.total())

	var again usageSum
	cs.takeInto(&again)
	require.Zero(t, again.calls, "take starts afresh")

	// Per-agent spread over several signers.
	var all usageSum
	for _, calls := range []uint64{3, 1, 7} {
		all.add(&signerStats{calls: calls, entries: calls})
	}
	require.Equal(t, 3, all.agents)
	require.EqualValues(t, 1, all.perAgentMin)
	require.EqualValues(t, 7, all.perAgentMax)
	require.EqualValues(t, 11, all.calls)
}

func TestWarnLog(t *testing.T) {
	h := newWarnLog()
	log := slog.New(h).With("node", "storm-node-3")
	log.Info("agent attested", "spiffe_id", "x") // below warn: ignored
	log.Warn("renew SVID", "spiffe_id", "spiffe://cluster.local/ns/a/sa/b", "code", "ResourceExhausted", "failures", 1)
	log.Warn("renew SVID", "code", "ResourceExhausted")
	log.Warn("renew SVID", "code", "Unavailable")
	log.Error("make workload key", "error", "boom")
	got := h.snapshot()
	require.Equal(t, map[string]uint64{
		"WARN renew SVID ResourceExhausted": 2,
		"WARN renew SVID Unavailable":       1,
		"ERROR make workload key":           1,
	}, got.counts)
	require.Equal(t, "node=storm-node-3 spiffe_id=spiffe://cluster.local/ns/a/sa/b code=ResourceExhausted failures=1", got.samples["WARN renew SVID ResourceExhausted"])
	require.True(t, isRenewWarning("WARN renew SVID Unavailable"))
	require.False(t, isRenewWarning("WARN renew agent SVID"))
}

func TestCounterTotals(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := nodeagent.NewMetrics(reg)
	m.RenewFailures.WithLabelValues("Unavailable").Add(3)
	m.RenewFailures.WithLabelValues("ResourceExhausted").Inc()
	m.Rotations.Add(7)
	got, err := counterTotals(reg, "lanyard_agent_renew_failures_total", "code")
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"Unavailable": 3, "ResourceExhausted": 1}, got)
	rot, err := counterTotals(reg, "lanyard_agent_rotations_total", "")
	require.NoError(t, err)
	require.Equal(t, 7.0, rot[""])
}

func TestStormConfig(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "no storm by default", mod: func(*Config) {}},
		{name: "defaults", mod: func(c *Config) { c.StormWorkloads = 10000 }},
		{name: "negative workloads", mod: func(c *Config) { c.StormWorkloads = -1 }, wantErr: "must not be negative"},
		{name: "more agents than workloads", mod: func(c *Config) { c.StormWorkloads, c.StormAgents = 5, 6 }, wantErr: "storm agents"},
		{name: "TTL too short", mod: func(c *Config) { c.StormWorkloads, c.StormAgents, c.StormTTL = 5, 5, time.Second }, wantErr: "storm TTL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Binary: "lanyard"}
			tt.mod(&c)
			err := c.fill()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, 100, c.StormAgents)
			require.Equal(t, 40*time.Second, c.StormTTL)
		})
	}
}

func TestStormFailuresAndReport(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func() *stormResult {
		r := &stormResult{
			plan: stormPlan{workloads: 4, agents: 2, ttl: 30 * time.Second}, start: t0, stormMeasured: true,
			tl: timeline{
				fetched: 4, renewed: 4, firstFetch: t0.Add(100 * time.Millisecond), lastFetch: t0.Add(time.Second),
				dueFrom: t0.Add(14 * time.Second), dueTo: t0.Add(17 * time.Second),
				firstRenew: t0.Add(14 * time.Second), lastRenew: t0.Add(16 * time.Second),
			},
			mem0: memSample{inUse: 1 << 20, alloc: 1 << 20}, mem1: memSample{inUse: 1<<20 + 40960, alloc: 1<<20 + 30720},
			mem2:      memSample{inUse: 1<<20 + 40960, alloc: 1<<20 + 30720},
			rotations: 8, renewFailures: map[string]float64{},
		}
		r.cold.agents.add(&signerStats{calls: 1, entries: 2, maxBatch: 2})
		r.cold.agents.add(&signerStats{calls: 1, entries: 2, maxBatch: 2})
		r.storm.agents.add(&signerStats{calls: 2, entries: 2, maxBatch: 1})
		r.storm.agents.add(&signerStats{calls: 1, entries: 2, maxBatch: 2})
		return r
	}
	var out bytes.Buffer
	r := good()
	require.Zero(t, r.failures())
	r.report(&out)
	text := out.String()
	for _, want := range []string{
		"storm: 4 workloads", "on 2 node agents", "2 workloads each", "SVID TTL 30s",
		"storm cold start: time to fetch all 1.00s (4 SVIDs, 4.0 certs/s, first after 100ms)",
		"agents' batching: 2 BatchSign calls = 1.0 per agent (min 1, max 1), 2.0 entries/call (max 2)",
		"storm renewal: time to renew all 2.00s (4 SVIDs, first renewal to last) = 2.0 certs/s",
		"3.00s wide = 1.3 renewals/s asked of the CA; renewals after their latest due time: 0",
		"agents' batching: 3 BatchSign calls = 1.5 per agent (min 1, max 2)",
		"agent memory: 10.0 KiB heap in use per workload with all 4 SVIDs held",
		"storm failures: 0 (agents' renew failures by code: none; agents' rotations: 8)",
	} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, text, "FAILED")
	require.NotContains(t, text, "note:")
	require.NotContains(t, text, "issuance:", "the summary line is not the storm's")

	r = good()
	r.rotations = 10
	out.Reset()
	r.report(&out)
	require.Zero(t, r.failures(), "a second renewal is no failure")
	require.Contains(t, out.String(), "note: 2 SVIDs were renewed a second time before the storm ended")

	r = good()
	r.renewFailures = map[string]float64{"ResourceExhausted": 3}
	r.storm.agents.fails.add("entry ResourceExhausted", "128 signing operations in flight", 3)
	r.agentLog.add("WARN renew SVID ResourceExhausted", "code=ResourceExhausted", 3)
	r.agentLog.add("WARN renew agent SVID", "error=boom", 1)
	r.tl.renewed, r.tl.expiredFirst = 3, 1
	require.EqualValues(t, 3+1+1+1, r.failures(), "renew failures, one not renewed, expired, one other warning")
	out.Reset()
	r.report(&out)
	text = out.String()
	for _, want := range []string{
		"storm renewal: INCOMPLETE, 3 of 4 subscriptions renewed",
		"storm failures: 6 (agents' renew failures by code: ResourceExhausted x3",
		"FAILED: 1 SVIDs expired before their renewal arrived",
		`FAILED (BatchSignSVIDs as the agents saw it): entry ResourceExhausted x3, e.g. "128 signing operations in flight"`,
		"agent log: WARN renew agent SVID x1, e.g. error=boom",
	} {
		require.Contains(t, text, want)
	}

	r = good()
	r.stormMeasured = false
	r.tl.fetched, r.tl.renewed = 3, 0
	r.incomplete = []string{"cold start: 3 of 4 subscriptions had an SVID after 30s"}
	require.EqualValues(t, 1, r.failures(), "not renewed does not count twice when the storm never ran")
	out.Reset()
	r.report(&out)
	require.Contains(t, out.String(), "storm cold start: INCOMPLETE, 3 of 4")
	require.Contains(t, out.String(), "FAILED: cold start: 3 of 4")
	require.NotContains(t, out.String(), "storm renewal")
}
