package attest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/reexectest"

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
const nobody = reexectest.Nobody

func TestMain(m *testing.M) { reexectest.Main(m, childSocketEnv, runChild) }

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

// runAsNobody runs this test binary as nobody in child mode against sock
// and returns what it printed (a status code name) and its PID.
func runAsNobody(t *testing.T, sock string) (string, int) {
	t.Helper()
	return reexectest.RunAsNobody(t, childSocketEnv, sock)
}

func worldDir(t *testing.T) string { return reexectest.WorldDir(t) }
