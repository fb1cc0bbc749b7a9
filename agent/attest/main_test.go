package attest_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The test binary doubles as a client run as another user: with
// childSocketEnv set, it calls the health service on that socket, prints
// the status code, and exits.
const childSocketEnv = "LANYARD_ATTEST_TEST_CHILD_SOCKET"

// nobody is the uid and gid children run as.
const nobody = 65534

func TestMain(m *testing.M) {
	if sock := os.Getenv(childSocketEnv); sock != "" {
		os.Exit(runChild(sock))
	}
	goleak.VerifyTestMain(m)
}

func runChild(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Print(status.Code(err).String())
	return 0
}

// runAsNobody runs this test binary as uid/gid 65534 in child mode against
// sock and returns what it printed (a status code name) and its PID. The
// binary is copied where that user may execute it, and the socket's
// directory must be reachable (see shareSocket).
func runAsNobody(t *testing.T, sock string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	dir := worldDir(t)
	bin := filepath.Join(dir, "child.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), childSocketEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "child: %s", stderr.String())
	return string(out), cmd.Process.Pid
}

// worldDir is a temporary directory every user may enter: t.TempDir and
// the per-test directory above it are 0700.
func worldDir(t *testing.T) string {
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
