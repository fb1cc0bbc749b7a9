package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// tokenHeadroom is how many more tokens than the warm-up rate predicts a
// timed phase gets, so that faster steady-state issuance still finds
// fresh tokens.
const tokenHeadroom = 1.5

// startReadyCA starts the CA and waits until it is ready, trying new ports
// when the ones picked were taken in between.
func startReadyCA(ctx context.Context, cfg Config, dir string, progress func(string, ...any)) (*caProcess, error) {
	for attempt := 1; ; attempt++ {
		ca, err := startCA(cfg.Binary, dir, cfg.postgresDSN)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		err = ca.waitReady(ctx, cfg.StartTimeout)
		if err == nil {
			return ca, nil
		}
		ca.stop(5 * time.Second)
		tail := ca.logTail(20)
		if attempt < 3 && ctx.Err() == nil && strings.Contains(tail, "address already in use") {
			progress("port taken before the CA could bind it; retrying with new ports")
			continue
		}
		return nil, fmt.Errorf("bench: %w\n--- last lines of the CA log (%s):\n%s\n---", err, ca.logPath, tail)
	}
}

// runner runs the load phases against the started CA.
type runner struct {
	cfg      Config
	ca       *caProcess
	floor    floorResult
	nodes    []string
	progress func(string, ...any)
	mint     *minter
	load     load
	hc       *http.Client
	best     float64 // highest timed rate so far: batching only makes issuance faster
}

// snapshot is the CA's and the bench's counters at one instant.
type snapshot struct {
	caCPU, benchCPU time.Duration
	m               metrics
}

func (r *runner) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	var err error
	if s.caCPU, err = cpuTime(r.ca.pid()); err != nil {
		return s, err
	}
	if s.benchCPU, err = cpuTime(os.Getpid()); err != nil {
		return s, err
	}
	s.m, err = scrapeMetrics(ctx, r.hc, "http://"+r.ca.httpAddr+"/metrics")
	return s, err
}

// phase is the outcome of one batch size: a warm-up and a timed run.
type phase struct {
	batch, callers   int
	warm, timed      *loadResult
	warmRate         float64 // fresh-token rate measured in the warm-up
	minted           int     // tokens minted for the timed run
	capped           bool    // minted was cut to MaxTokens
	fresh, reused    uint64  // token use in the timed run
	before, after    snapshot
	floor            floorResult
	pid              int
	issued, rejected float64 // CA metric deltas
}

// phase runs the warm-up with tokens of its own, mints enough fresh tokens
// for the timed run from the rate the warm-up reached, and runs the timed
// load between two snapshots of the CA's CPU time and metrics. Minting
// happens while the CA idles and is never timed.
func (r *runner) phase(ctx context.Context, batch int) (*phase, error) {
	l := r.load
	l.batch = batch
	p := &phase{batch: batch, callers: l.callers, floor: r.floor, pid: r.ca.pid()}

	// Without cache hits the CA cannot issue faster than the crypto floor
	// (or than an earlier phase, if the machine got quieter since), so this
	// lasts the warm-up; plus the tokens of two rounds of calls in flight.
	n := int(max(r.floor.rate, r.best)*r.cfg.Warmup.Seconds()*tokenHeadroom) + 2*l.callers*batch
	n = min(max(n, len(r.nodes)), r.cfg.MaxTokens)
	r.progress("B=%d: minting %d warm-up tokens", batch, n)
	pools, err := r.mint.pools(ctx, r.nodes, n)
	if err != nil {
		return nil, err
	}
	l.pools = pools
	r.progress("B=%d: warm-up %s, %d callers", batch, r.cfg.Warmup, l.callers)
	p.warm = l.run(ctx, r.cfg.Warmup)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Entries answered per second in the warm-up's steady second half
	// (tokens are taken a whole round of calls ahead of the answers, so
	// their take rate would overestimate), or the best timed rate so far.
	p.warmRate = p.warm.steadyRate
	rate := max(p.warmRate, r.best)
	if _, reused := poolStats(pools); reused > 0 {
		rate = max(rate, r.floor.rate) // cache hits sped the warm-up up: do not trust it
	}
	if rate <= 0 {
		rate = r.floor.rate
	}
	need := int(rate*r.cfg.Duration.Seconds()*tokenHeadroom) + 2*l.callers*batch
	if need > r.cfg.MaxTokens {
		need, p.capped = r.cfg.MaxTokens, true
	}
	p.minted = need
	r.progress("B=%d: warm-up reached %s certs/s; minting %d tokens for the timed run", batch, formatRate(p.warmRate), need)
	if l.pools, err = r.mint.pools(ctx, r.nodes, need); err != nil {
		return nil, err
	}

	r.progress("B=%d: timed run %s", batch, r.cfg.Duration)
	if p.before, err = r.snapshot(ctx); err != nil {
		return nil, err
	}
	p.timed = l.run(ctx, r.cfg.Duration)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.after, err = r.snapshot(ctx); err != nil {
		return nil, err
	}
	p.fresh, p.reused = poolStats(l.pools)
	r.best = max(r.best, p.rate())
	const issued = `lanyard_ca_certificates_issued_total{kind="workload"}`
	p.issued = p.after.m.value(issued) - p.before.m.value(issued)
	p.rejected = p.after.m.sum("lanyard_ca_requests_rejected_total") - p.before.m.sum("lanyard_ca_requests_rejected_total")
	return p, nil
}

// rate is the certificates per second of the timed run.
func (p *phase) rate() float64 {
	if p.timed.elapsed <= 0 {
		return 0
	}
	return float64(p.timed.certs) / p.timed.elapsed.Seconds()
}

func (p *phase) report(out io.Writer) {
	t := p.timed
	secs := t.elapsed.Seconds()
	fmt.Fprintf(out, "phase B=%d: %d callers x %d entries/call for %.2fs: %s certs/s (%s calls/s), per call p50=%.2fms p99=%.2fms max=%.2fms; %d certs OK, %d failed\n",
		p.batch, p.callers, p.batch, secs, formatRate(p.rate()), formatRate(float64(t.rpcs)/secs),
		ms(t.hist.percentile(50)), ms(t.hist.percentile(99)), ms(t.hist.percentile(100)), t.certs, t.failed())
	if t.certs > 0 {
		caCPU := p.after.caCPU - p.before.caCPU
		benchCPU := p.after.benchCPU - p.before.benchCPU
		allocs := p.after.m.value("go_memstats_mallocs_total") - p.before.m.value("go_memstats_mallocs_total")
		certs := float64(t.certs)
		fmt.Fprintf(out, "  CA process (pid %d): %.0f us CPU/cert (%.2f cores busy), %.0f allocs/cert (go_memstats_mallocs_total); CA metrics: +%.0f workload certs issued, +%.0f rejections\n",
			p.pid, float64(caCPU.Microseconds())/certs, caCPU.Seconds()/secs, allocs/certs, p.issued, p.rejected)
		fmt.Fprintf(out, "  bench process (client, same machine): %.0f us CPU/cert (%.2f cores busy); crypto floor: %d us CPU/cert, so the CA spends %.2fx the floor's CPU per cert\n",
			float64(benchCPU.Microseconds())/certs, benchCPU.Seconds()/secs, p.floor.cpuPerCert().Microseconds(),
			float64(caCPU)/certs/float64(p.floor.cpuPerCert()))
	}
	sent := p.fresh + p.reused
	if p.reused == 0 {
		fmt.Fprintf(out, "  tokens: all %d entries carried a token never sent before: CA token-cache hit ratio 0%%, full RS256 verification per certificate (%d minted from a warm-up rate of %s certs/s)\n",
			sent, p.minted, formatRate(p.warmRate))
	} else {
		why := "steady state outran the warm-up estimate"
		if p.capped {
			why = "the --max-tokens cap"
		}
		fmt.Fprintf(out, "  tokens: %d of %d entries (%.1f%%) reused a token sent earlier in this run (%s); the CA's 30s token cache may have answered those without JWT verification: cache hit ratio <= %.1f%%\n",
			p.reused, sent, 100*float64(p.reused)/float64(sent), why, 100*float64(p.reused)/float64(sent))
	}
	fmt.Fprintf(out, "  warm-up (not counted): %.2fs, %d certs OK, %d failed\n", p.warm.elapsed.Seconds(), p.warm.certs, p.warm.failed())
	reportFailures(out, "timed", p.timed)
	reportFailures(out, "warm-up", p.warm)
}

func reportFailures(out io.Writer, what string, r *loadResult) {
	kinds := make([]string, 0, len(r.failures))
	for k := range r.failures {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(out, "  FAILED (%s): %s x%d, e.g. %q\n", what, k, r.failures[k], r.samples[k])
	}
}

// formatRate prints a rate as an integer, or with one decimal below 100.
func formatRate(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func runtimeCores() int { return runtime.NumCPU() }
