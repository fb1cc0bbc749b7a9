package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// caProcess is the `lanyard dev` child under test.
type caProcess struct {
	cmd      *exec.Cmd
	dir      string
	grpcAddr string
	httpAddr string
	logPath  string
	done     chan struct{} // closed once the process has exited and been reaped
	waitErr  error         // valid after done is closed
}

// startCA starts `<binary> dev` on two free loopback ports with its state
// in dir, in its own process group (so that stop reaches everything it
// started) and with SIGKILL as its parent-death signal (so that it dies
// with the benchmark even when the benchmark is killed). Its stdout and
// stderr go to dir/ca.log.
func startCA(binary, dir, postgresDSN string) (*caProcess, error) {
	grpcAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "ca.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("CA log file: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "--- lanyard dev --grpc-addr %s --http-addr %s (started by lanyard bench at %s)\n",
		grpcAddr, httpAddr, time.Now().Format(time.RFC3339))
	args := []string{"dev", "--dir", dir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--agent=false", "--log-level", "warn"}
	if postgresDSN != "" {
		args = append(args, "--postgres-dsn", postgresDSN)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start CA %s: %w", binary, err)
	}
	p := &caProcess{cmd: cmd, dir: dir, grpcAddr: grpcAddr, httpAddr: httpAddr, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// freeLoopbackAddr returns 127.0.0.1:<port> for a port that was free a
// moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

func (p *caProcess) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *caProcess) exited() (bool, error) {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return true, errors.New("exited with status 0")
		}
		return true, p.waitErr
	default:
		return false, nil
	}
}

// waitReady waits until /readyz answers 200 and bundle.pem exists.
func (p *caProcess) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	url := "http://" + p.httpAddr + "/readyz"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx, hc, url) {
			if _, err := os.Stat(filepath.Join(p.dir, "bundle.pem")); err == nil {
				return nil
			}
		}
		select {
		case <-p.done:
			_, err := p.exited()
			return fmt.Errorf("CA exited before it was ready: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("CA not ready (%s and bundle.pem) within %s: %w", url, timeout, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func ready(ctx context.Context, hc *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop ends the process group: SIGTERM, then SIGKILL after grace. It
// returns once the process has been reaped.
func (p *caProcess) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.pid() // Setpgid: the child leads its own group
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// logTail returns the last n lines of the CA's log.
func (p *caProcess) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(data, []byte("?"))), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
