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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// process is a lanyard child process in its own process group, its stdout
// and stderr in a log file. Dev and NodeAgent embed it for Stop, Kill,
// Running, Pid and Output.
type process struct {
	name    string // for messages: "lanyard dev", "lanyard agent"
	logPath string

	cmd      *exec.Cmd
	grace    time.Duration
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	stopOnce sync.Once
	stopErr  error
	stopped  atomic.Bool // Stop or Kill was called
	killed   atomic.Bool // Kill was called
}

// start runs bin with args in its own process group, output to logFile.
func (p *process) start(bin string, args, env []string, logFile *os.File) error {
	p.done = make(chan struct{})
	p.logPath = logFile.Name()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

// cleanup stops the process when the test ends. A process that exited on
// its own fails the test; the output is logged when the test failed.
func (p *process) cleanup(t testing.TB, what string) {
	t.Cleanup(func() {
		crashed := !p.Running() && !p.stopped.Load()
		err := p.Stop()
		switch {
		case crashed:
			// Whatever the test did, the process must not exit on its own.
			t.Errorf("harness: %s (pid %d) exited during the test: %v", p.name, p.cmd.Process.Pid, exitErr(p.waitErr))
		case err != nil && !p.killed.Load():
			t.Logf("harness: %s (pid %d) did not exit cleanly: %v", p.name, p.cmd.Process.Pid, err)
		}
		if t.Failed() {
			t.Logf("--- %s output (pid %d, %s) ---\n%s", p.name, p.cmd.Process.Pid, what, p.Output())
		}
	})
}

// exitedErr reports, without blocking, that the process has exited.
func (p *process) exitedErr() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready: %v", p.name, exitErr(p.waitErr))
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process group, waits for the process, and
// sends SIGKILL to the group if it is still running after the grace period
// (Options.StopGrace). It returns the process's exit error (nil for a clean
// exit), and the same result on every call.
func (p *process) Stop() error {
	p.stopped.Store(true)
	p.stopOnce.Do(func() {
		if p.cmd == nil || p.cmd.Process == nil {
			return
		}
		select {
		case <-p.done:
			p.stopErr = fmt.Errorf("exited before Stop: %w", exitErr(p.waitErr))
			return
		default:
		}
		pgid := p.cmd.Process.Pid // Setpgid: the group is the leader's pid
		signalGroup(pgid, false)
		select {
		case <-p.done:
			p.stopErr = p.waitErr
		case <-time.After(p.grace):
			signalGroup(pgid, true)
			<-p.done
			p.stopErr = fmt.Errorf("killed: no exit within %s of SIGTERM", p.grace)
		}
	})
	return p.stopErr
}

// Kill sends SIGKILL to the process group at once, as a crash or an OOM
// kill would, and waits for the process. Stop then reports the kill.
func (p *process) Kill() {
	p.stopped.Store(true)
	p.killed.Store(true)
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.stopErr = fmt.Errorf("exited before Kill: %w", exitErr(p.waitErr))
			return
		default:
		}
		signalGroup(p.cmd.Process.Pid, true)
		<-p.done
		p.stopErr = fmt.Errorf("killed: %w", exitErr(p.waitErr))
	})
}

func exitErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// Running reports whether the process has not exited.
func (p *process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process id (and process group id).
func (p *process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process has written to stdout and stderr.
func (p *process) Output() string {
	if p.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.logPath, err)
	}
	return string(b)
}

// lostPortRace tells whether a start failed because a port found free was
// taken before the process bound it.
func (p *process) lostPortRace() bool {
	return strings.Contains(p.Output(), "address already in use")
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

var httpClient = &http.Client{Timeout: 5 * time.Second}

// httpGet fetches http://addr/path.
func httpGet(addr, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
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

// ready polls http://addr/readyz until it answers 200 (and check, when
// set, returns nil), the process exits, or timeout passes.
func (p *process) ready(addr string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if err := p.exitedErr(); err != nil {
			return err
		}
		code, _, err := httpGet(addr, "/readyz")
		switch {
		case err != nil:
			last = err
		case code != http.StatusOK:
			last = fmt.Errorf("%s/readyz answered %d", addr, code)
		case check != nil:
			last = check()
		default:
			last = nil
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %v", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTPGet is a GET of path on addr: status code and body.
func HTTPGet(addr, path string) (int, []byte, error) { return httpGet(addr, path) }
