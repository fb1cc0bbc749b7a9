package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatchdogStopsOrphan: a process that starts a server and dies without
// Close leaves nothing running: the watchdog stops the server and removes
// its directory.
func TestWatchdogStopsOrphan(t *testing.T) {
	if os.Getenv("PGTEST_ORPHAN") == "1" {
		s, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("dir", s.dir)
		os.Exit(0) // no Close
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdogStopsOrphan$")
	cmd.Env = append(os.Environ(), "PGTEST_ORPHAN=1")
	out, err := cmd.Output()
	require.NoError(t, err, "%s", out)
	var dir string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "dir "); ok {
			dir = d
		}
	}
	require.NotEmpty(t, dir, "%s", out)
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "data"))
		return os.IsNotExist(err)
	}, 30*time.Second, 100*time.Millisecond, "the orphaned server's directory is still there")
}

func TestServerDatabases(t *testing.T) {
	s, err := Start(t.Context(), Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) }) // after the database is dropped
	require.NoError(t, s.Template(t.Context(), "tmpl", func(ctx context.Context, dsn string) error {
		return s.Exec(ctx, "SELECT 1")
	}))
	dsn := s.NewDatabase(t, "tmpl")
	require.Contains(t, dsn, fmt.Sprint(s.Port))
	require.NoError(t, s.Pause(t.Context()))
	require.Error(t, s.Exec(t.Context(), "SELECT 1"), "paused")
	require.NoError(t, s.Resume(t.Context()))
	require.NoError(t, s.Exec(t.Context(), "SELECT 1"))
}
