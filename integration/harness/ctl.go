//go:build unix

package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvCtlBinary names a prebuilt lanyardctl binary to use instead of
// building one.
const EnvCtlBinary = "LANYARDCTL_BIN"

const ctlPackage = "github.com/lanyard-id/lanyard/cmd/lanyardctl"

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// CtlBinary returns the path of the lanyardctl binary: $LANYARDCTL_BIN
// when set, otherwise one built once per test binary.
func CtlBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvCtlBinary); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("harness: %s: %v", EnvCtlBinary, err)
		}
		return abs
	}
	if buildDir == "" {
		t.Fatal("harness: call harness.Main(m) from TestMain, or set " + EnvCtlBinary)
	}
	ctlOnce.Do(func() { ctlPath, ctlErr = build(buildDir, "lanyardctl", ctlPackage) })
	if ctlErr != nil {
		t.Fatalf("harness: %v", ctlErr)
	}
	return ctlPath
}

// AdminSocket is the dev CA's admin socket.
func (d *Dev) AdminSocket() string { return filepath.Join(d.Dir, "admin.sock") }

// CtlResult is how one lanyardctl run ended.
type CtlResult struct {
	Stdout, Stderr string
	// Code is the exit code.
	Code int
}

// CtlOptions changes how Ctl runs lanyardctl.
type CtlOptions struct {
	// Credential, when set, runs it as another user (the test must run as
	// root, and the binary be readable by that user: see CtlBinaryFor).
	Credential *syscall.Credential
	// Binary replaces CtlBinary(t).
	Binary string
}

// Ctl runs `lanyardctl args...` (with CallTimeout) and returns its output
// and exit code. It fails the test only if the binary cannot be run.
func Ctl(t testing.TB, opts CtlOptions, args ...string) CtlResult {
	t.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = CtlBinary(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if opts.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: opts.Credential}
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	res := CtlResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.Code = exit.ExitCode()
	default:
		t.Fatalf("harness: run lanyardctl %v: %v", args, err)
	}
	return res
}

// CtlBinaryFor copies lanyardctl into a fresh 0755 directory (removed when
// the test ends) so that another user can run it.
func CtlBinaryFor(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lanyardctl-")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	bin := filepath.Join(dir, "lanyardctl")
	if err := copyFile(CtlBinary(t), bin, 0o755); err != nil {
		t.Fatalf("harness: copy lanyardctl: %v", err)
	}
	return bin
}
