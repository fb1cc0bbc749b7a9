package workloadapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/reexectest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffeworkload "github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent/attest"
	"github.com/lanyard-id/lanyard/agent/workloadapi"
)

// The test binary doubles as a Workload API client run as another user:
// with childSocketEnv set, it fetches an X.509-SVID with the go-spiffe
// client from that socket, prints the status code, and exits.
const childSocketEnv = "LANYARD_WORKLOADAPI_TEST_CHILD_SOCKET"

// nobody is the uid and gid children run as.
const nobody = reexectest.Nobody

func TestMain(m *testing.M) { reexectest.Main(m, childSocketEnv, runChild) }

func runChild(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := spiffeworkload.FetchX509SVID(ctx, spiffeworkload.WithAddr("unix://"+sock))
	fmt.Print(status.Code(err).String())
	return 0
}

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// serve runs a Workload API server on a Unix socket in dir with the
// agent's peer credentials, and returns the socket path.
func serve(t *testing.T, dir string, cfg workloadapi.Config) string {
	t.Helper()
	ws, err := workloadapi.New(cfg)
	require.NoError(t, err)
	sock := filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(sock, 0o777))
	srv := grpc.NewServer(grpc.Creds(attest.NewCredentials("")))
	ws.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

// identifier maps uid 0 (the test) to shop/web and identifies token
// callers by their token.
func identifier(t *testing.T) *attest.Identifier {
	t.Helper()
	root := uint32(0)
	unix, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{
		{UID: &root, Namespace: "shop", ServiceAccount: "web"},
	}})
	require.NoError(t, err)
	id, err := attest.NewIdentifier(attest.IdentifierConfig{TrustDomain: td, Attestors: []attest.Attestor{unix}})
	require.NoError(t, err)
	return id
}

// noRules is an identifier that identifies no peer.
func noRules(t *testing.T) *attest.Identifier {
	t.Helper()
	unix, err := attest.NewUnix(attest.UnixConfig{})
	require.NoError(t, err)
	id, err := attest.NewIdentifier(attest.IdentifierConfig{TrustDomain: td, Attestors: []attest.Attestor{unix}})
	require.NoError(t, err)
	return id
}

// client is a go-spiffe Workload API client on sock; extra dial options
// (a bearer token) optional.
func client(t *testing.T, sock string, opts ...grpc.DialOption) *spiffeworkload.Client {
	t.Helper()
	c, err := spiffeworkload.New(context.Background(), spiffeworkload.WithAddr("unix://"+sock),
		spiffeworkload.WithDialOptions(opts...))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// runAsNobody runs this test binary as nobody in child mode against sock
// and returns what it printed (a status code name).
func runAsNobody(t *testing.T, sock string) string {
	t.Helper()
	out, _ := reexectest.RunAsNobody(t, childSocketEnv, sock)
	return out
}

func worldDir(t *testing.T) string { return reexectest.WorldDir(t) }
