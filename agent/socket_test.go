package agent

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// shortTempDir keeps socket paths under the 108-byte sun_path limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lanyard-sock")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func requireDial(t *testing.T, path string) {
	t.Helper()
	conn, err := net.Dial("unix", path)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}

func TestListenSocketMode(t *testing.T) {
	for _, mode := range []fs.FileMode{0o600, 0o660, 0o666} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(shortTempDir(t), "run", "lanyard", "agent.sock")
			l, err := ListenSocket(path, mode)
			require.NoError(t, err)
			defer l.Close()
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			require.NotZero(t, fi.Mode()&fs.ModeSocket)
			require.Equal(t, mode, fi.Mode().Perm())
			di, err := os.Lstat(filepath.Dir(path))
			require.NoError(t, err)
			require.True(t, di.IsDir())
			requireDial(t, path)
		})
	}
}

func TestListenSocketBadMode(t *testing.T) {
	dir := shortTempDir(t)
	for _, mode := range []fs.FileMode{0o400, 0o200, 0o066, fs.ModeSetuid | 0o600, fs.ModeSticky | 0o660} {
		_, err := ListenSocket(filepath.Join(dir, "agent.sock"), mode)
		require.Error(t, err, "mode %s", mode)
	}
	_, err := os.Lstat(filepath.Join(dir, "agent.sock"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestListenSocketReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "agent.sock")
	old, err := net.Listen("unix", path)
	require.NoError(t, err)
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, old.Close())
	_, err = net.Dial("unix", path)
	require.Error(t, err, "the old socket is stale")

	l, err := ListenSocket(path, 0o600)
	require.NoError(t, err)
	defer l.Close()
	requireDial(t, path)
}

func TestListenSocketRefusesOtherFiles(t *testing.T) {
	for _, tt := range []struct {
		name string
		make func(t *testing.T, path string)
	}{
		{"regular file", func(t *testing.T, p string) { require.NoError(t, os.WriteFile(p, []byte("keep me"), 0o600)) }},
		{"directory", func(t *testing.T, p string) { require.NoError(t, os.Mkdir(p, 0o700)) }},
		{"symlink to a socket", func(t *testing.T, p string) {
			target := filepath.Join(filepath.Dir(p), "real.sock")
			l, err := net.Listen("unix", target)
			require.NoError(t, err)
			t.Cleanup(func() { l.Close() })
			require.NoError(t, os.Symlink(target, p))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(shortTempDir(t), "agent.sock")
			tt.make(t, path)
			before, err := os.Lstat(path)
			require.NoError(t, err)
			l, err := ListenSocket(path, 0o600)
			require.Error(t, err)
			require.Nil(t, l)
			after, err := os.Lstat(path)
			require.NoError(t, err, "the file is left alone")
			require.Equal(t, before.Mode(), after.Mode())
		})
	}
}

func TestListenSocketRefusesSymlinkedDir(t *testing.T) {
	base := shortTempDir(t)
	real := filepath.Join(base, "real")
	require.NoError(t, os.Mkdir(real, 0o755))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(real, link))
	l, err := ListenSocket(filepath.Join(link, "agent.sock"), 0o600)
	require.Error(t, err)
	require.Nil(t, l)
	_, err = os.Lstat(filepath.Join(real, "agent.sock"))
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing is created through the link")
}

func TestListenSocketRefusesFileAsDir(t *testing.T) {
	base := shortTempDir(t)
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := ListenSocket(filepath.Join(file, "agent.sock"), 0o600)
	require.Error(t, err)
}

func TestListenSocketRefusesSocketInUse(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "agent.sock")
	l, err := ListenSocket(path, 0o600)
	require.NoError(t, err)
	defer l.Close()
	_, err = ListenSocket(path, 0o600)
	require.ErrorContains(t, err, "in use")
	// The first listener still serves.
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	c.Close()
}

func TestListenSocketCloseRemovesFile(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "agent.sock")
	l, err := ListenSocket(path, 0o600)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	_, err = os.Lstat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
}
