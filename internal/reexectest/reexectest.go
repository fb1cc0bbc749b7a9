// Package reexectest is the one re-exec child helper of Lanyard's tests:
// a test binary that doubles as a client run as another user, so that a
// server's peer-credential checks meet a real process of another uid.
//
//	func TestMain(m *testing.M) { reexectest.Main(m, childEnv, runChild) }
//	…
//	out, pid := reexectest.RunAsNobody(t, childEnv, sock)
package reexectest

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Nobody is the uid and gid children run as.
const Nobody = 65534

// Main is a TestMain: with env set, this process is the child: it runs
// child with env's value and exits with what it returns. Otherwise it runs
// the tests, which must leak no goroutine.
func Main(m *testing.M, env string, child func(value string) int) {
	if v := os.Getenv(env); v != "" {
		os.Exit(child(v))
	}
	goleak.VerifyTestMain(m)
}

// RunAsNobody runs this test binary as uid/gid Nobody with env=value and
// returns what it printed and its PID. The binary is copied where that
// user may execute it; whatever value names (a socket) must be reachable
// by that user (see WorldDir). The caller must be root.
func RunAsNobody(t *testing.T, env, value string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	bin := filepath.Join(WorldDir(t), "child.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env+"="+value)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "child: %s", stderr.String())
	return string(out), cmd.Process.Pid
}

// WorldDir is a temporary directory every user may enter: t.TempDir and
// the per-test directory above it are 0700.
func WorldDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
