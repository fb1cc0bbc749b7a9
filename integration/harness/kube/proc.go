package kube

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a process has to exit after SIGTERM.
const stopGrace = 10 * time.Second

// logTail is how many lines of a process's output a failed test shows.
const logTail = 150

// process is a control-plane child in its own process group, its output
// in a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
	stopped atomic.Bool   // stop was called: an exit is expected
}

// startProcess runs bin with args, output to a new file in logDir, and
// stops it when the test ends (logging the tail of its output if the test
// failed).
func startProcess(t testing.TB, name, bin, logDir string, args []string) (*process, error) {
	logFile, err := os.CreateTemp(logDir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	p := &process{name: name, logPath: logFile.Name(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		exited := !p.running() && !p.stopped.Load()
		p.stop()
		if exited {
			t.Errorf("kube: %s (pid %d) exited during the test: %v", p.name, p.cmd.Process.Pid, p.waitErr)
		}
		if t.Failed() || exited {
			t.Logf("--- %s output (pid %d), last %d lines ---\n%s", p.name, p.cmd.Process.Pid, logTail, p.tail(logTail))
		}
	})
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited returns an error once the process has exited.
func (p *process) exited() error {
	if p.running() {
		return nil
	}
	return fmt.Errorf("%s exited: %v", p.name, p.waitErr)
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace,
// and waits for the process.
func (p *process) stop() {
	p.stopped.Store(true)
	if !p.running() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last n lines of the process's output.
func (p *process) tail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(open %s: %v)", p.logPath, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// lostPortRace tells whether the process failed because a port found free
// was taken before it bound it.
func (p *process) lostPortRace() bool {
	return strings.Contains(p.tail(logTail), "address already in use")
}

// freePorts returns n distinct free 127.0.0.1 ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// poll calls check every 50ms until it returns nil, p exits, or timeout
// passes.
func poll(p *process, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := p.exited(); err != nil {
			return err
		}
		last := check()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("%s not ready after %s", p.name, timeout), last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
