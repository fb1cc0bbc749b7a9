package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of StartDev.
const (
	DefaultTrustDomain  = "cluster.local"
	DefaultStartTimeout = 30 * time.Second
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace = 5 * time.Second
)

// Files `lanyard dev` keeps in its directory.
const (
	BundleFile = "bundle.pem"
	DBFile     = "lanyard.db"
)

// DevNode is the node name of the agent `lanyard dev` runs.
const DevNode = "dev-node"

// Options configures StartDev. The zero value starts a fresh dev CA with
// its node agent.
type Options struct {
	// Dir is the state directory; empty means a new t.TempDir(). Pass the
	// Dir of a stopped Dev to start again on the same state (or use
	// Restart, which keeps the ports too).
	Dir string
	// TrustDomain is passed as --trust-domain (default cluster.local).
	TrustDomain string
	// Args are extra flags for `lanyard dev`, for example "--agent=false"
	// (the CA alone) or "--svid-ttl=4s".
	Args []string
	// Env adds KEY=value entries to the process environment.
	Env []string
	// GRPCAddr, HTTPAddr and AgentHTTPAddr, when set, are used instead of
	// free ports (set all three, or none).
	GRPCAddr, HTTPAddr, AgentHTTPAddr string
	// StartTimeout bounds the wait for /readyz and bundle.pem (default 30s).
	StartTimeout time.Duration
	// StopGrace is how long Stop waits after SIGTERM before it sends
	// SIGKILL (default StopGrace).
	StopGrace time.Duration
}

// Dev is a running `lanyard dev` process.
type Dev struct {
	process
	// Dir is the state directory (root, store, dev issuer key, bundle.pem).
	Dir         string
	TrustDomain spiffeid.TrustDomain
	// GRPCAddr and HTTPAddr are the CA's 127.0.0.1 addresses;
	// AgentHTTPAddr is the node agent's health and metrics address. The
	// agent's socket is SocketPath().
	GRPCAddr      string
	HTTPAddr      string
	AgentHTTPAddr string
	// LogPath holds the process's stdout and stderr.
	LogPath string

	opts Options // as started, with the ports it got
}

// StartDev starts `lanyard dev` on free 127.0.0.1 ports in its own process
// group, waits until /readyz answers 200 and bundle.pem exists (and, unless
// it runs with --agent=false, until its node agent is attested), and stops
// it when the test ends. The process's output is logged if the test fails.
func StartDev(t testing.TB, opts Options) *Dev {
	t.Helper()
	bin := Binary(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = StopGrace
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		t.Fatalf("harness: trust domain: %v", err)
	}
	logDir := t.TempDir()
	// A port found free can be taken by someone else before the process
	// binds it; try again with new ports when that happens.
	const attempts = 3
	for i := 1; ; i++ {
		d, err := startDev(t, bin, logDir, td, opts)
		if err == nil {
			return d
		}
		if i < attempts && opts.GRPCAddr == "" && d.lostPortRace() {
			t.Logf("harness: lanyard dev lost a port race, retrying: %v", err)
			continue
		}
		t.Fatalf("harness: start lanyard dev: %v (its output follows)", err) // logged by the cleanup
	}
}

// Restart starts `lanyard dev` again on the same directory, ports and
// flags, after Stop or Kill: agents configured with its address find it
// again. It fails the test if d is still running.
func (d *Dev) Restart(t testing.TB) *Dev {
	t.Helper()
	if d.Running() {
		t.Fatal("harness: Restart of a lanyard dev that is still running")
	}
	return StartDev(t, d.opts)
}

func startDev(t testing.TB, bin, logDir string, td spiffeid.TrustDomain, opts Options) (*Dev, error) {
	d := &Dev{Dir: opts.Dir, TrustDomain: td, opts: opts}
	d.name = "lanyard dev"
	if opts.GRPCAddr != "" {
		if opts.HTTPAddr == "" || opts.AgentHTTPAddr == "" {
			return d, errors.New("set GRPCAddr, HTTPAddr and AgentHTTPAddr together")
		}
	} else {
		addrs, err := freeAddrs(3)
		if err != nil {
			return d, err
		}
		d.opts.GRPCAddr, d.opts.HTTPAddr, d.opts.AgentHTTPAddr = addrs[0], addrs[1], addrs[2]
	}
	d.GRPCAddr, d.HTTPAddr, d.AgentHTTPAddr = d.opts.GRPCAddr, d.opts.HTTPAddr, d.opts.AgentHTTPAddr
	logFile, err := os.CreateTemp(logDir, "lanyard-dev-*.log")
	if err != nil {
		return d, err
	}
	defer logFile.Close() // the child has its own descriptor
	d.LogPath = logFile.Name()
	d.grace = opts.StopGrace
	args := []string{
		"dev", "--dir", opts.Dir, "--grpc-addr", d.GRPCAddr, "--http-addr", d.HTTPAddr, "--agent-http-addr", d.AgentHTTPAddr,
		"--trust-domain", td.Name(), "--log-level", "debug",
	}
	if err := d.start(bin, append(args, opts.Args...), opts.Env, logFile); err != nil {
		return d, err
	}
	d.cleanup(t, d.GRPCAddr)
	if err := d.waitReady(opts.StartTimeout); err != nil {
		d.Stop()
		return d, err
	}
	return d, nil
}

// HasAgent reports whether this Dev runs a node agent (no --agent=false).
func (d *Dev) HasAgent() bool {
	for _, a := range d.opts.Args {
		if v, ok := strings.CutPrefix(a, "--agent="); ok {
			if on, err := strconv.ParseBool(v); err == nil && !on {
				return false
			}
		}
	}
	return true
}

// waitReady waits for the CA's /readyz and bundle.pem, then for the dev
// agent's /readyz (attested), so that the agent's own certificate is issued
// before a test counts certificates.
func (d *Dev) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	err := d.ready(d.HTTPAddr, timeout, func() error {
		_, err := os.Stat(d.BundlePath())
		return err
	})
	if err != nil || !d.HasAgent() {
		return err
	}
	if err := d.ready(d.AgentHTTPAddr, time.Until(deadline), nil); err != nil {
		return fmt.Errorf("node agent: %w", err)
	}
	return nil
}

// SocketPath is the node agent's Unix socket (SDS + Workload API).
func (d *Dev) SocketPath() string { return filepath.Join(d.Dir, "agent.sock") }

// BundlePath is <Dir>/bundle.pem; DBPath is <Dir>/lanyard.db.
func (d *Dev) BundlePath() string { return filepath.Join(d.Dir, BundleFile) }
func (d *Dev) DBPath() string     { return filepath.Join(d.Dir, DBFile) }

func (d *Dev) get(path string) (int, []byte, error) { return httpGet(d.HTTPAddr, path) }

// Healthz returns the status code of GET /healthz (0 when unreachable).
func (d *Dev) Healthz(t testing.TB) int {
	t.Helper()
	code, _, err := d.get("/healthz")
	if err != nil {
		t.Logf("harness: /healthz: %v", err)
	}
	return code
}

// Readyz returns the status code of GET /readyz (0 when unreachable).
func (d *Dev) Readyz(t testing.TB) int {
	t.Helper()
	code, _, err := d.get("/readyz")
	if err != nil {
		t.Logf("harness: /readyz: %v", err)
	}
	return code
}

// AgentReadyz returns the status code of the dev agent's GET /readyz (0
// when unreachable).
func (d *Dev) AgentReadyz(t testing.TB) int {
	t.Helper()
	code, _, err := httpGet(d.AgentHTTPAddr, "/readyz")
	if err != nil {
		t.Logf("harness: agent /readyz: %v", err)
	}
	return code
}
