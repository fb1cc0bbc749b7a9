package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Environment variables the harness reads.
const (
	// EnvBinary names a prebuilt lanyard binary to use instead of building.
	EnvBinary = "LANYARD_BIN"
	// EnvBuildFlags adds flags to the build (for example "-race").
	EnvBuildFlags = "LANYARD_BUILDFLAGS"
)

// mainPackage is what Binary builds.
const mainPackage = "github.com/lanyard-id/lanyard/cmd/lanyard"

var (
	buildDir  string // set by Main; holds the built binary
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Main runs the tests of m, checks that they leaked no goroutine, removes
// the binary built for them and exits. Call it from TestMain. (When CallAs
// started the binary as a client of an agent socket, Main is that client.)
func Main(m *testing.M) {
	if socket := os.Getenv(EnvPeerSocket); socket != "" {
		os.Exit(runPeer(socket))
	}
	dir, err := os.MkdirTemp("", "lanyard-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(2)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "harness: goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Binary returns the path of the lanyard binary: $LANYARD_BIN when set,
// otherwise one built once per test binary (with $LANYARD_BUILDFLAGS).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("harness: %s: %v", EnvBinary, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("harness: %s: %v", EnvBinary, err)
		}
		return abs
	}
	if buildDir == "" {
		t.Fatal("harness: call harness.Main(m) from TestMain, or set " + EnvBinary)
	}
	buildOnce.Do(func() {
		start := time.Now()
		binPath, buildErr = build(buildDir, "lanyard", mainPackage)
		if buildErr == nil {
			t.Logf("harness: built %s in %s", mainPackage, time.Since(start).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatalf("harness: %v", buildErr)
	}
	return binPath
}

func build(dir, name, pkg string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			return "", fmt.Errorf("find the go command: %w", err)
		}
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	args = append(args, strings.Fields(os.Getenv(EnvBuildFlags))...)
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	return out, nil
}
