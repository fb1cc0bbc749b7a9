package attest_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/attest"
)

// peerServer is a gRPC health server on a Unix socket with attest
// credentials. Every call's peer is sent on peers; with an Identifier,
// callers it cannot identify get PermissionDenied.
type peerServer struct {
	sock  string
	peers chan attest.Peer
	ids   chan agent.Workload
}

func startPeerServer(t *testing.T, dir string, id *attest.Identifier) *peerServer {
	t.Helper()
	ps := &peerServer{sock: filepath.Join(dir, "agent.sock"), peers: make(chan attest.Peer, 8), ids: make(chan agent.Workload, 8)}
	lis, err := net.Listen("unix", ps.sock)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(ps.sock, 0o777))
	srv := grpc.NewServer(grpc.Creds(attest.NewCredentials("")),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := attest.PeerFromContext(ctx); ok {
				ps.peers <- p
			}
			if id != nil {
				w, err := id.Identify(ctx)
				if errors.Is(err, agent.ErrNotIdentified) {
					return nil, status.Error(codes.PermissionDenied, "not identified")
				}
				if err != nil {
					return nil, status.Error(codes.Unavailable, "attestation failed")
				}
				ps.ids <- w
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return ps
}

func (ps *peerServer) check(t *testing.T) error {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+ps.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestCredentialsReportPeer(t *testing.T) {
	ps := startPeerServer(t, t.TempDir(), nil)
	require.NoError(t, ps.check(t))
	p := <-ps.peers
	require.Equal(t, int32(os.Getpid()), p.PID)
	require.Equal(t, uint32(os.Getuid()), p.UID)
	require.Equal(t, uint32(os.Getgid()), p.GID)
	require.NotZero(t, p.StartTime, "start time of a live process is readable")
}

func TestCredentialsOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatalf("this test runs a child as uid %d and needs root (uid is %d)", nobody, os.Getuid())
	}
	root := uint32(0)
	unix, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{
		{UID: &root, Namespace: "default", ServiceAccount: "admin"},
	}})
	require.NoError(t, err)
	id, err := attest.NewIdentifier(attest.IdentifierConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Attestors:   []attest.Attestor{unix},
	})
	require.NoError(t, err)
	ps := startPeerServer(t, worldDir(t), id)

	// The mapped user is identified.
	require.NoError(t, ps.check(t))
	<-ps.peers
	w := <-ps.ids
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/admin", w.ID.String())
	require.Equal(t, "unix", w.Attested.Attestor)

	// Another user, with no mapping, is refused; the kernel reports its
	// real uid, gid and pid.
	code, pid := runAsNobody(t, ps.sock)
	require.Equal(t, codes.PermissionDenied.String(), code)
	p := <-ps.peers
	require.Equal(t, attest.Peer{PID: int32(pid), UID: nobody, GID: nobody, StartTime: p.StartTime}, p)
}

func TestCredentialsRefuseNonUnixConn(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			done <- c
		}
		close(done)
	}()
	client, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server := <-done
	require.NotNil(t, server)
	defer server.Close()
	_, _, err = attest.NewCredentials("").ServerHandshake(server)
	require.ErrorContains(t, err, "not a Unix socket")

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, _, err = attest.NewCredentials("").ServerHandshake(a)
	require.ErrorContains(t, err, "not a socket")
}

func TestPeerFromContextWithoutCredentials(t *testing.T) {
	_, ok := attest.PeerFromContext(context.Background())
	require.False(t, ok)
}
