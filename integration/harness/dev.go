package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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

// Options configures StartDev. The zero value starts a fresh dev CA.
type Options struct {
	// Dir is the state directory; empty means a new t.TempDir(). Pass the
	// Dir of a stopped Dev to start again on the same state.
	Dir string
	// TrustDomain is passed as --trust-domain (default cluster.local).
	TrustDomain string
	// Args are extra flags for `lanyard dev`.
	Args []string
	// Env adds KEY=value entries to the process environment.
	Env []string
	// StartTimeout bounds the wait for /readyz and bundle.pem (default 30s).
	StartTimeout time.Duration
	// StopGrace is how long Stop waits after SIGTERM before it sends
	// SIGKILL (default StopGrace).
	StopGrace time.Duration
}

// SocketPath is the node agent's Unix socket (SDS + Workload API).
func (d *Dev) SocketPath() string { return filepath.Join(d.Dir, "agent.sock") }

// Dev is a running `lanyard dev` process.
type Dev struct {
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

	cmd      *exec.Cmd
	grace    time.Duration
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	stopOnce sync.Once
	stopErr  error
	stopped  atomic.Bool // Stop or Kill was called
	killed   atomic.Bool // Kill was called
}

// StartDev starts `lanyard dev` on free 127.0.0.1 ports in its own process
// group, waits until /readyz answers 200 and bundle.pem exists, and stops
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
		if i < attempts && strings.Contains(d.Output(), "address already in use") {
			t.Logf("harness: lanyard dev lost a port race, retrying: %v", err)
			continue
		}
		t.Fatalf("harness: start lanyard dev: %v (its output follows)", err) // logged by the cleanup
	}
}

func startDev(t testing.TB, bin, logDir string, td spiffeid.TrustDomain, opts Options) (*Dev, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return &Dev{}, err
	}
	logFile, err := os.CreateTemp(logDir, "lanyard-dev-*.log")
	if err != nil {
		return &Dev{}, err
	}
	defer logFile.Close() // the child has its own descriptor
	d := &Dev{
		Dir: opts.Dir, TrustDomain: td, GRPCAddr: addrs[0], HTTPAddr: addrs[1], AgentHTTPAddr: addrs[2],
		LogPath: logFile.Name(), grace: opts.StopGrace, done: make(chan struct{}),
	}
	args := []string{
		"dev", "--dir", opts.Dir, "--grpc-addr", d.GRPCAddr, "--http-addr", d.HTTPAddr, "--agent-http-addr", d.AgentHTTPAddr,
		"--trust-domain", td.Name(), "--log-level", "debug",
	}
	d.cmd = exec.Command(bin, append(args, opts.Args...)...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.Env = append(os.Environ(), opts.Env...)
	d.cmd.SysProcAttr = sysProcAttr()
	if err := d.cmd.Start(); err != nil {
		return d, err
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		crashed := !d.Running() && !d.stopped.Load()
		err := d.Stop()
		switch {
		case crashed:
			// Whatever the test did, the CA must not exit on its own.
			t.Errorf("harness: lanyard dev (pid %d) exited during the test: %v", d.cmd.Process.Pid, exitErr(d.waitErr))
		case err != nil && !d.killed.Load():
			t.Logf("harness: lanyard dev (pid %d) did not exit cleanly: %v", d.cmd.Process.Pid, err)
		}
		if t.Failed() {
			t.Logf("--- lanyard dev output (pid %d, %s) ---\n%s", d.cmd.Process.Pid, d.GRPCAddr, d.Output())
		}
	})
	if err := d.waitReady(opts.StartTimeout); err != nil {
		d.Stop()
		return d, err
	}
	return d, nil
}

// freeAddrs returns n distinct free 127.0.0.1 addresses.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func (d *Dev) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-d.done:
			return fmt.Errorf("lanyard dev exited before it was ready: %v", d.waitErr)
		default:
		}
		code, _, err := d.get("/readyz")
		switch {
		case err != nil:
			last = err
		case code != http.StatusOK:
			last = fmt.Errorf("/readyz answered %d", code)
		default:
			_, err := os.Stat(d.BundlePath())
			if err == nil {
				return nil
			}
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %v", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM to the process group, waits for the process, and
// sends SIGKILL to the group if it is still running after the grace period
// (Options.StopGrace). It returns the process's exit error (nil for a clean
// exit), and the same result on every call.
func (d *Dev) Stop() error {
	d.stopped.Store(true)
	d.stopOnce.Do(func() {
		if d.cmd == nil || d.cmd.Process == nil {
			return
		}
		select {
		case <-d.done:
			d.stopErr = fmt.Errorf("exited before Stop: %w", exitErr(d.waitErr))
			return
		default:
		}
		pgid := d.cmd.Process.Pid // Setpgid: the group is the leader's pid
		signalGroup(pgid, false)
		select {
		case <-d.done:
			d.stopErr = d.waitErr
		case <-time.After(d.grace):
			signalGroup(pgid, true)
			<-d.done
			d.stopErr = fmt.Errorf("killed: no exit within %s of SIGTERM", d.grace)
		}
	})
	return d.stopErr
}

// Kill sends SIGKILL to the process group at once, as a crash or an OOM
// kill would, and waits for the process. Stop then reports the kill.
func (d *Dev) Kill() {
	d.stopped.Store(true)
	d.killed.Store(true)
	d.stopOnce.Do(func() {
		select {
		case <-d.done:
			d.stopErr = fmt.Errorf("exited before Kill: %w", exitErr(d.waitErr))
			return
		default:
		}
		signalGroup(d.cmd.Process.Pid, true)
		<-d.done
		d.stopErr = fmt.Errorf("killed: %w", exitErr(d.waitErr))
	})
}

func exitErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// Running reports whether the process has not exited.
func (d *Dev) Running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Pid is the process id (and process group id).
func (d *Dev) Pid() int { return d.cmd.Process.Pid }

// Output returns what the process has written to stdout and stderr.
func (d *Dev) Output() string {
	if d.LogPath == "" {
		return ""
	}
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", d.LogPath, err)
	}
	return string(b)
}

// BundlePath is <Dir>/bundle.pem; DBPath is <Dir>/lanyard.db.
func (d *Dev) BundlePath() string { return filepath.Join(d.Dir, BundleFile) }
func (d *Dev) DBPath() string     { return filepath.Join(d.Dir, DBFile) }

var httpClient = &http.Client{Timeout: 5 * time.Second}

func (d *Dev) get(path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.HTTPAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, bytes.TrimSpace(body), err
}

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
