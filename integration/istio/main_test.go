package istio

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// TestMain builds the lanyard binary from the main module, so that it is
// built with the main module's dependencies and not this module's, and
// hands it to the harness through $LANYARD_BIN.
//
// It does not check for leaked goroutines as integration/harness.Main
// does: Istio's packages start goroutines of their own when imported.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(harness.EnvBinary) == "" {
		dir, err := os.MkdirTemp("", "lanyard-istio-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "istio integration:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		bin, err := buildLanyard(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "istio integration:", err)
			return 2
		}
		os.Setenv(harness.EnvBinary, bin)
	}
	return m.Run()
}

func buildLanyard(dir string) (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "lanyard")
	args := append([]string{"build", "-o", out}, strings.Fields(os.Getenv(harness.EnvBuildFlags))...)
	args = append(args, "./cmd/lanyard")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, msg)
	}
	return out, nil
}
