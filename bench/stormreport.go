package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// failures adds up everything that went wrong in the storm; it must be 0.
// Each failed renewal attempt counts (the agents' own
// lanyard_agent_renew_failures_total, whatever the cause), as does every
// subscription that ended in an error, every SVID not fetched, not renewed
// or renewed only after it expired, and every other warning the agents
// logged.
func (r *stormResult) failures() uint64 {
	var n uint64
	for _, v := range r.renewFailures {
		n += uint64(v)
	}
	n += uint64(r.tl.errs)
	n += uint64(r.plan.workloads - r.tl.fetched)
	if r.stormMeasured {
		n += uint64(r.plan.workloads - r.tl.renewed)
	}
	n += uint64(r.tl.expiredFirst)
	for _, k := range r.agentLog.kinds() {
		if !isRenewWarning(k) {
			n += r.agentLog.counts[k]
		}
	}
	return n
}

// isRenewWarning is the manager's warning for a failed renewal, which the
// renew-failure metric counts already.
func isRenewWarning(kind string) bool {
	return strings.HasPrefix(kind, "WARN renew SVID ")
}

// rate is n per d, or 0.
func rate(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// report writes the storm's lines. They come before the `issuance:` line.
func (r *stormResult) report(out io.Writer) {
	p, tl := r.plan, r.tl
	fmt.Fprintf(out, "storm: %d workloads (unix-attested, one service account each in %d namespaces) on %d node agents in the bench process (agent.Client + agent.Manager with their defaults, %s workloads each), SVID TTL %s, renewal at half-life ±10 %%\n",
		p.workloads, min(p.workloads, stormNamespaces), p.agents, perAgent(p.workloads, p.agents), p.ttl)

	cold := &r.cold.agents
	if tl.fetched == p.workloads {
		fetch := tl.lastFetch.Sub(r.start)
		fmt.Fprintf(out, "storm cold start: time to fetch all %.2fs (%d SVIDs, %s certs/s, first after %.0fms)\n",
			fetch.Seconds(), tl.fetched, formatRate(rate(float64(tl.fetched), fetch)), ms(tl.firstFetch.Sub(r.start)))
		r.usage(out, &r.cold, cold, float64(tl.fetched))
	} else {
		fmt.Fprintf(out, "storm cold start: INCOMPLETE, %d of %d subscriptions got an SVID\n", tl.fetched, p.workloads)
		r.usage(out, &r.cold, cold, float64(tl.fetched))
	}

	if r.stormMeasured {
		storm := &r.storm.agents
		renew := tl.lastRenew.Sub(tl.firstRenew)
		if tl.renewed == p.workloads {
			fmt.Fprintf(out, "storm renewal: time to renew all %.2fs (%d SVIDs, first renewal to last) = %s certs/s; first renewal %.2fs after the last cold-start SVID\n",
				renew.Seconds(), tl.renewed, formatRate(rate(float64(tl.renewed), renew)), tl.firstRenew.Sub(tl.lastFetch).Seconds())
		} else {
			fmt.Fprintf(out, "storm renewal: INCOMPLETE, %d of %d subscriptions renewed (first to last %.2fs)\n", tl.renewed, p.workloads, renew.Seconds())
		}
		window := tl.dueTo.Sub(tl.dueFrom)
		fmt.Fprintf(out, "  due window (half-life ±10 %% of every SVID from its receipt, so the cold start's spread carries over): %.2fs wide = %s renewals/s asked of the CA; renewals after their latest due time: %d (lateness p50=%.0fms p99=%.0fms max=%.0fms; negative = before it)\n",
			window.Seconds(), formatRate(rate(float64(tl.fetched), window)), tl.late, ms(tl.lateP50), ms(tl.lateP99), ms(tl.lateMax))
		if extra := r.rotations - 2*float64(tl.renewed); tl.renewed == p.workloads && extra > 0 {
			fmt.Fprintf(out, "  note: %.0f SVIDs were renewed a second time before the storm ended (it outlasted 45 %% of the TTL); a longer --storm-ttl keeps the rounds apart\n", extra)
		}
		if tl.earlyRenewals > 0 {
			fmt.Fprintf(out, "  WARNING: %d renewals came before the cold start had finished: raise --storm-ttl to keep the phases apart\n", tl.earlyRenewals)
		}
		r.usage(out, &r.storm, storm, float64(tl.renewed))
		if b := r.between.agents; b.calls > 0 {
			fmt.Fprintf(out, "  between the phases: %d BatchSign calls (%d entries): retries of failed fetches, or renewals due earlier than the window\n", b.calls, b.entries)
		}
	}

	if held := p.workloads; held > 0 && r.mem1.inUse > 0 {
		per := func(m memSample) (float64, float64) {
			return (float64(m.inUse) - float64(r.mem0.inUse)) / float64(held) / 1024,
				(float64(m.alloc) - float64(r.mem0.alloc)) / float64(held) / 1024
		}
		in1, al1 := per(r.mem1)
		line := fmt.Sprintf("  agent memory: %.1f KiB heap in use per workload with all %d SVIDs held (HeapInuse %+.1f MiB after GC since before subscribing; live heap, HeapAlloc, %.1f KiB/workload): the in-process agent.Manager and its subscriptions, plus the bench's idle watcher per subscription",
			in1, held, (float64(r.mem1.inUse)-float64(r.mem0.inUse))/(1<<20), al1)
		if r.stormMeasured {
			in2, al2 := per(r.mem2)
			line += fmt.Sprintf("; after the storm %.1f KiB in use, %.1f KiB live", in2, al2)
		}
		fmt.Fprintln(out, line)
	}

	fmt.Fprintf(out, "storm failures: %d", r.failures())
	codes := make([]string, 0, len(r.renewFailures))
	for c, v := range r.renewFailures {
		if v > 0 {
			codes = append(codes, fmt.Sprintf("%s x%.0f", c, v))
		}
	}
	slices.Sort(codes)
	fmt.Fprintf(out, " (agents' renew failures by code: %s; agents' rotations: %.0f", orNone(codes), r.rotations)
	if r.canceledAtClose > 0 {
		fmt.Fprintf(out, "; %d calls cut short when the agents stopped, not counted", r.canceledAtClose)
	}
	fmt.Fprintln(out, ")")
	for _, s := range r.incomplete {
		fmt.Fprintf(out, "  FAILED: %s\n", s)
	}
	if tl.errs > 0 {
		fmt.Fprintf(out, "  FAILED: %d subscriptions reported an error, e.g. %v\n", tl.errs, tl.sampleErr)
	}
	if tl.expiredFirst > 0 {
		fmt.Fprintf(out, "  FAILED: %d SVIDs expired before their renewal arrived\n", tl.expiredFirst)
	}
	var calls failures
	calls.merge(r.cold.agents.fails)
	calls.merge(r.between.agents.fails)
	calls.merge(r.storm.agents.fails)
	for _, k := range calls.kinds() {
		fmt.Fprintf(out, "  FAILED (BatchSignSVIDs as the agents saw it): %s x%d, e.g. %q\n", k, calls.counts[k], calls.samples[k])
	}
	for _, k := range r.agentLog.kinds() {
		fmt.Fprintf(out, "  agent log: %s x%d, e.g. %s\n", k, r.agentLog.counts[k], r.agentLog.samples[k])
	}
}

// usage writes the CA's and the agents' side of one stretch.
func (r *stormResult) usage(out io.Writer, u *stormUsage, s *usageSum, certs float64) {
	if !u.to.isZero() && certs > 0 {
		caCPU := u.to.caCPU - u.from.caCPU
		benchCPU := u.to.benchCPU - u.from.benchCPU
		const issuedSeries = `lanyard_ca_certificates_issued_total{kind="workload"}`
		issued := u.to.m.value(issuedSeries) - u.from.m.value(issuedSeries)
		if issued > 0 { // what the CA did in the stretch, second renewals included
			certs = issued
		}
		fmt.Fprintf(out, "  CA process (pid %d): %.2fs CPU = %.0f us CPU/cert; CA metrics: +%.0f workload certs issued, +%.0f rejections; bench process (the agents): %.0f us CPU/cert\n",
			r.caPID, caCPU.Seconds(), float64(caCPU.Microseconds())/certs, issued,
			u.to.m.sum("lanyard_ca_requests_rejected_total")-u.from.m.sum("lanyard_ca_requests_rejected_total"),
			float64(benchCPU.Microseconds())/certs)
	}
	if s.calls == 0 {
		fmt.Fprintln(out, "  agents: no BatchSign calls")
		return
	}
	agents := max(s.agents, 1)
	fmt.Fprintf(out, "  agents' batching: %d BatchSign calls = %.1f per agent (min %d, max %d), %.1f entries/call (max %d); per call p50=%.1fms p99=%.1fms max=%.1fms\n",
		s.calls, float64(s.calls)/float64(agents), s.perAgentMin, s.perAgentMax, float64(s.entries)/float64(s.calls), s.maxBatch,
		ms(s.hist.percentile(50)), ms(s.hist.percentile(99)), ms(s.hist.percentile(100)))
}

func (s snapshot) isZero() bool { return s.caCPU == 0 && s.benchCPU == 0 && s.m == nil }

func perAgent(n, m int) string {
	if m == 0 {
		return "0"
	}
	if n%m == 0 {
		return fmt.Sprint(n / m)
	}
	return fmt.Sprintf("%d–%d", n/m, n/m+1)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
