package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// ListenSocket listens on a Unix socket at path with the given mode (0600
// or 0660 usually). The directory is created 0755 when missing and must be
// a real directory (not a symlink); a stale socket is removed, but never a
// file of another kind.
func ListenSocket(path string, mode fs.FileMode) (net.Listener, error) {
	if mode&^0o777 != 0 || mode&0o600 != 0o600 {
		return nil, fmt.Errorf("socket mode %o: owner must read and write, permission bits only", mode)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("socket dir %s is not a directory", dir)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}
