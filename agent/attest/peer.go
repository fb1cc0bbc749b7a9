package attest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// DefaultProcRoot is where procfs is mounted unless configured otherwise.
const DefaultProcRoot = "/proc"

// authType is what AuthInfo.AuthType reports.
const authType = "peercred"

// Peer is the process at the other end of a Unix socket connection, as
// the kernel reported it (SO_PEERCRED) when the connection was accepted.
type Peer struct {
	// PID of the process that called connect(2), in the agent's PID
	// namespace; 0 when that process is not visible there (another PID
	// namespace without hostPID).
	PID int32
	// UID and GID are the effective user and primary group of that process
	// at connect time. Supplementary groups are not reported by the kernel.
	UID, GID uint32
	// StartTime is the process's start time (field 22 of /proc/<pid>/stat,
	// clock ticks since boot) read right after the connection was accepted;
	// 0 when it could not be read. Attestors that look the PID up in procfs
	// compare it before and after, so that a PID reused by another process
	// is not attested as the caller. See the package documentation.
	StartTime uint64
}

// AuthInfo is the credentials.AuthInfo that Credentials attach to every
// connection. Handlers reach it through PeerFromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Peer Peer
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return authType }

// PeerFromContext returns the peer of the connection a gRPC call came in
// on, when the server runs with Credentials.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Peer{}, false
	}
	info, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return Peer{}, false
	}
	return info.Peer, true
}

// Credentials are server-side gRPC transport credentials for the agent's
// Unix socket. They add no encryption (the socket never leaves the host);
// they read the peer's process credentials with SO_PEERCRED when a
// connection is accepted and attach them as AuthInfo. Connections that are
// not Unix sockets are refused.
type Credentials struct {
	procRoot string
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// NewCredentials returns Credentials that read process start times under
// procRoot ("" means DefaultProcRoot).
func NewCredentials(procRoot string) *Credentials {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	return &Credentials{procRoot: procRoot}
}

// ServerHandshake reads the peer's credentials off the socket.
func (c *Credentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	p, err := peerCredentials(conn)
	if err != nil {
		return nil, nil, err
	}
	if p.PID > 0 {
		// Best effort: an unreadable start time leaves 0, which attestors
		// that need it treat as "cannot attest".
		p.StartTime, _ = processStartTime(c.procRoot, p.PID)
	}
	// Like grpc's local credentials for Unix sockets: the kernel carries the
	// bytes and vouches for the peer.
	return conn, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Peer:           p,
	}, nil
}

// ClientHandshake is not supported: these credentials are for the server.
func (*Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer credentials are server-side only")
}

// Info implements credentials.TransportCredentials.
func (*Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

// Clone implements credentials.TransportCredentials.
func (c *Credentials) Clone() credentials.TransportCredentials {
	return &Credentials{procRoot: c.procRoot}
}

// OverrideServerName implements credentials.TransportCredentials; unused.
func (*Credentials) OverrideServerName(string) error { return nil }

// peerCredentials reads SO_PEERCRED from a Unix socket connection.
func peerCredentials(conn net.Conn) (Peer, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a socket", conn)
	}
	if _, ok := conn.LocalAddr().(*net.UnixAddr); !ok {
		return Peer{}, fmt.Errorf("peer credentials: %s is not a Unix socket", conn.LocalAddr().Network())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		cred    *unix.Ucred
		credErr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", credErr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// maxStatSize bounds what is read of /proc/<pid>/stat.
const maxStatSize = 4 << 10

// processStartTime reads field 22 (starttime) of <procRoot>/<pid>/stat.
func processStartTime(procRoot string, pid int32) (uint64, error) {
	data, err := readBounded(filepath.Join(procRoot, strconv.Itoa(int(pid)), "stat"), maxStatSize)
	if err != nil {
		return 0, err
	}
	return parseStartTime(data)
}

// parseStartTime extracts starttime from the contents of /proc/<pid>/stat.
// The command name (field 2) is parenthesised and may itself hold spaces
// and parentheses, so fields are counted from the last ')'.
func parseStartTime(stat []byte) (uint64, error) {
	end := -1
	for i := len(stat) - 1; i >= 0; i-- {
		if stat[i] == ')' {
			end = i
			break
		}
	}
	if end < 0 || end+2 > len(stat) {
		return 0, errors.New("malformed stat: no command name")
	}
	// Fields after ") " start at field 3 (state); starttime is field 22.
	const want = 22 - 3
	field, start := 0, end+2
	for i := start; i <= len(stat); i++ {
		if i < len(stat) && stat[i] != ' ' {
			continue
		}
		if field == want {
			v, err := strconv.ParseUint(string(stat[start:i]), 10, 64)
			if err != nil || v == 0 {
				return 0, fmt.Errorf("malformed stat: starttime %q", stat[start:i])
			}
			return v, nil
		}
		field++
		start = i + 1
	}
	return 0, errors.New("malformed stat: too few fields")
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, limit)
	}
	return data, nil
}
