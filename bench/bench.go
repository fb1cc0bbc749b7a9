package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/internal/pgtest"
)

// Config configures Run. Zero fields take the defaults in brackets.
type Config struct {
	// Binary is the lanyard executable to start as `lanyard dev`. Required.
	Binary string
	// Issuer is the dev token issuer URL `lanyard dev` trusts as cluster
	// "dev" [https://lanyard-dev.invalid].
	Issuer string
	// AgentNamespace and AgentServiceAccount name the service account dev
	// mode lets attest as a node agent [lanyard/lanyard-agent].
	AgentNamespace      string
	AgentServiceAccount string
	// Audience of every token sent to the CA [lanyard].
	Audience string
	// Agents is the number of node agents the callers speak as [4].
	Agents int
	// Callers is the number of concurrent BatchSignSVIDs callers [64].
	Callers int
	// Duration of each timed phase [10s], after Warmup [2s], which is not
	// counted.
	Duration time.Duration
	Warmup   time.Duration
	// Batch is the entries per call of the main phase, the one the last
	// line reports [1]. BigBatch is the entries per call of a second phase
	// that shows batching [32]; negative skips it.
	Batch    int
	BigBatch int
	// Identities is the number of distinct workload service accounts [500].
	Identities int
	// CSRs is the number of distinct P-256 keys and CSRs [256].
	CSRs int
	// FloorDuration is how long the crypto floor runs [3s].
	FloorDuration time.Duration
	// MaxTokens caps the workload tokens minted for one timed phase
	// [200000]. Past the cap tokens are reused, and the report says how
	// many entries could have been answered from the CA's token cache.
	MaxTokens int
	// StormWorkloads is the number of workloads of the rotation storm; 0
	// skips it (the CLI's default is 10000). They are spread over
	// StormAgents node agents [100] in the bench process, which ask for
	// SVIDs with StormTTL [40s]: short enough to wait for the renewals at
	// half-life, long enough that the cold start is over well before them
	// and the storm before the renewed SVIDs come due again.
	StormWorkloads int
	StormAgents    int
	StormTTL       time.Duration
	// StartTimeout bounds the wait for the CA to be ready [60s].
	StartTimeout time.Duration
	// KeepDir keeps the state directory (CA log, store) after a successful
	// run; it is always kept after a failure.
	KeepDir bool
	// Progress receives progress lines; nil discards them.
	Progress io.Writer
	// Stores are the stores measured, one run each, in order: "sqlite"
	// and "postgres" [both]. The rotation storm and the batching phase
	// run with the first only. For PostgreSQL the benchmark starts a
	// server of its own (internal/pgtest: Debian's postgresql, fsync and
	// synchronous_commit on) on 127.0.0.1.
	Stores []string

	postgresDSN string // the store of the current run, set by Run
}

func (c *Config) fill() error {
	if c.Binary == "" {
		return errors.New("bench: the lanyard binary is required")
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.Issuer, "https://lanyard-dev.invalid")
	def(&c.AgentNamespace, "lanyard")
	def(&c.AgentServiceAccount, "lanyard-agent")
	def(&c.Audience, "lanyard")
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.Agents, 4)
	defInt(&c.Callers, 64)
	defInt(&c.Batch, 1)
	defInt(&c.BigBatch, 32)
	defInt(&c.Identities, 500)
	defInt(&c.CSRs, 256)
	defInt(&c.MaxTokens, 200000)
	defInt(&c.StormAgents, 100)
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defDur(&c.Duration, 10*time.Second)
	defDur(&c.Warmup, 2*time.Second)
	defDur(&c.FloorDuration, 3*time.Second)
	defDur(&c.StartTimeout, 60*time.Second)
	defDur(&c.StormTTL, 40*time.Second)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if len(c.Stores) == 0 {
		c.Stores = []string{"sqlite", "postgres"}
	}
	for _, st := range c.Stores {
		if st != "sqlite" && st != "postgres" {
			return fmt.Errorf("bench: store %q: want sqlite or postgres", st)
		}
	}
	switch {
	case c.Agents < 1, c.Callers < 1, c.Identities < 1, c.CSRs < 1:
		return errors.New("bench: agents, callers, identities and CSRs must be at least 1")
	case c.Batch < 1 || c.Batch > 1000 || c.BigBatch > 1000:
		return errors.New("bench: batch sizes must be 1–1000")
	case c.Duration < 0 || c.Warmup < 0 || c.FloorDuration <= 0 || c.StartTimeout <= 0:
		return errors.New("bench: durations must not be negative")
	case c.MaxTokens < c.Agents:
		return errors.New("bench: max tokens must be at least the number of agents")
	case c.StormWorkloads < 0:
		return errors.New("bench: storm workloads must not be negative")
	case c.StormWorkloads > 0 && (c.StormAgents < 1 || c.StormAgents > c.StormWorkloads):
		return errors.New("bench: storm agents must be 1 to the number of storm workloads")
	case c.StormWorkloads > 0 && c.StormTTL < minStormTTL:
		return fmt.Errorf("bench: storm TTL must be at least %s", minStormTTL)
	}
	return nil
}

// Run measures each of cfg.Stores in turn (runStore) and writes their
// reports to out; each ends with its `issuance: ... store=<name>` line.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.fill(); err != nil {
		return err
	}
	var errs []error
	for i, store := range cfg.Stores {
		c := cfg
		if i > 0 { // the storm and the batching phase once, with the first store
			c.StormWorkloads, c.BigBatch = 0, -1
		}
		var stop func() error
		if store == "postgres" {
			fmt.Fprintf(cfg.Progress, "bench: starting PostgreSQL (fsync and synchronous_commit on)\n")
			pg, err := pgtest.Start(ctx, pgtest.Options{Fsync: true})
			if err != nil {
				errs = append(errs, fmt.Errorf("bench: %w", err))
				continue
			}
			if err := pg.Exec(ctx, "CREATE DATABASE lanyard_bench"); err != nil {
				errs = append(errs, fmt.Errorf("bench: %w", errors.Join(err, pg.Close())))
				continue
			}
			c.postgresDSN, stop = pg.DSN("lanyard_bench"), pg.Close
		}
		err := runStore(ctx, c, store, out)
		if stop != nil {
			err = errors.Join(err, stop())
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// runStore starts the CA binary as `lanyard dev` on store in a fresh
// directory, measures the crypto floor, attests the agents, runs the load
// phases and writes the report to out; the last line is the `issuance:`
// summary of the Batch phase. The CA process group is stopped before it
// returns, whatever happens. A run in which any certificate failed returns
// an error.
func runStore(ctx context.Context, cfg Config, store string, out io.Writer) (err error) {
	progress := func(format string, args ...any) { fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...) }
	dir, err := os.MkdirTemp("", "lanyard-bench-*")
	if err != nil {
		return fmt.Errorf("bench: state dir: %w", err)
	}
	defer func() {
		if err == nil && !cfg.KeepDir {
			os.RemoveAll(dir)
			return
		}
		progress("state (CA log, store) kept in %s", dir)
	}()
	loadAtStart := loadAverage()

	// The issuer key is made here, before the CA starts, so that both
	// processes use the same key file.
	iss, err := tokens.LoadOrCreateDevIssuer(dir, cfg.Issuer)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	csrs, err := csrPool(ctx, cfg.CSRs)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	ca, err := startReadyCA(ctx, cfg, dir, progress)
	if err != nil {
		return err
	}
	defer ca.stop(5 * time.Second)
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() { // a CA that dies ends the run at once
		select {
		case <-ca.done:
			_, werr := ca.exited()
			cancel(fmt.Errorf("CA process exited during the run: %w", werr))
		case <-ctx.Done():
		}
	}()
	tailShown := false
	showTail := func() {
		tailShown = true
		fmt.Fprintf(out, "--- last lines of the CA log (%s):\n%s\n---\n", ca.logPath, ca.logTail(40))
	}
	defer func() {
		if err != nil && !tailShown && parent.Err() == nil {
			showTail()
		}
	}()
	fail := func(err error) error {
		if parent.Err() != nil {
			return fmt.Errorf("bench: interrupted: %w", parent.Err())
		}
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return fmt.Errorf("bench: %w", cause)
		}
		return fmt.Errorf("bench: %w", err)
	}

	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return fail(errors.New("bundle.pem holds no certificate"))
	}
	agents, td, err := attestAgents(ctx, agentSpec{
		addr: ca.grpcAddr, roots: roots, serverName: "localhost",
		namespace: cfg.AgentNamespace, name: cfg.AgentServiceAccount, audience: cfg.Audience,
	}, iss, cfg.Agents)
	if err != nil {
		return fail(err)
	}
	defer closeAgents(agents)
	progress("CA pid %d ready on %s, %d agents attested (trust domain %s)", ca.pid(), ca.grpcAddr, len(agents), td.Name())

	progress("crypto floor: %s on %d cores while the CA idles", cfg.FloorDuration, runtimeCores())
	floor, err := cryptoFloor(ctx, cfg.FloorDuration, iss, cfg.Audience, td, csrs)
	if err != nil {
		return fail(err)
	}

	ids := identities(cfg.Identities)
	expected := make([]string, len(ids))
	for i, id := range ids {
		expected[i] = "spiffe://" + td.Name() + "/ns/" + id.namespace + "/sa/" + id.serviceAccount
	}
	nodes := make([]string, len(agents))
	for i, a := range agents {
		nodes[i] = a.node
	}
	r := &runner{
		cfg: cfg, ca: ca, floor: floor, nodes: nodes, progress: progress,
		mint: &minter{iss: iss, ids: ids, audience: cfg.Audience},
		load: load{agents: agents, csrs: csrs, expected: expected, roots: roots, callers: cfg.Callers},
		hc:   &http.Client{Timeout: 10 * time.Second},
	}
	batches := []int{cfg.Batch}
	if cfg.BigBatch > 0 && cfg.BigBatch != cfg.Batch {
		batches = append(batches, cfg.BigBatch)
	}
	var phases []*phase
	for _, b := range batches {
		p, err := r.phase(ctx, b)
		if err != nil {
			return fail(err)
		}
		phases = append(phases, p)
	}
	var storm *stormResult
	if cfg.StormWorkloads > 0 {
		if storm, err = r.storm(ctx, iss, td, bundle); err != nil {
			return fail(err)
		}
	}

	fmt.Fprintf(out, "lanyard bench: %d cores, load average %s at start; CA = `lanyard dev` pid %d on %s (%s store, dev issuer), %d agents, %d identities, %d CSRs\n",
		runtimeCores(), loadAtStart, ca.pid(), ca.grpcAddr, store, len(agents), len(ids), len(csrs))
	fmt.Fprintf(out, "crypto floor: %s certs/s, %d us CPU/cert = RS256 JWT verify (go-jose) + CSR parse+CheckSignature (P-256) + leaf sign (P-256 intermediate), %d goroutines for %.1fs in the bench process while the CA idles\n",
		formatRate(floor.rate), floor.cpuPerCert().Microseconds(), floor.workers, floor.elapsed.Seconds())
	if storm != nil {
		storm.report(out)
	}
	for i := len(phases) - 1; i >= 0; i-- { // the main phase last, just above its summary
		phases[i].report(out)
	}
	fmt.Fprintf(out, "load average %s at the end (other processes on this machine compete for the same cores)\n", loadAverage())
	var failed uint64
	for _, p := range phases {
		failed += p.warm.failed() + p.timed.failed()
	}
	main := phases[0]
	ratio := 0.0
	if floor.rate > 0 {
		ratio = main.rate() / floor.rate
	}
	summary := fmt.Sprintf("issuance: %s certs/s p50=%.2fms p99=%.2fms floor=%s certs/s ratio=%.2f store=%s",
		formatRate(main.rate()), ms(main.timed.hist.percentile(50)), ms(main.timed.hist.percentile(99)), formatRate(floor.rate), ratio, store)
	var stormFailed uint64
	if storm != nil {
		stormFailed = storm.failures()
	}
	if failed > 0 || stormFailed > 0 {
		var errs []error
		if failed > 0 {
			fmt.Fprintf(out, "FAILED: %d certificate requests failed (see above)\n", failed)
			errs = append(errs, fmt.Errorf("bench: %d certificate requests failed", failed))
		}
		if stormFailed > 0 {
			fmt.Fprintf(out, "FAILED: rotation storm: %d failures (see above)\n", stormFailed)
			errs = append(errs, fmt.Errorf("bench: rotation storm: %d failures", stormFailed))
		}
		showTail()
		fmt.Fprintln(out, summary)
		return errors.Join(errs...)
	}
	fmt.Fprintln(out, summary)
	return nil
}
