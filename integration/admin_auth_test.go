package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	adminv1 "github.com/lanyard-id/lanyard/proto/lanyard/admin/v1"
)

const nobody = 65534

// sharedDir is a 0755 state directory another user can traverse, so that
// the admin socket's own mode is what refuses them.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lanyard-admin-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// refusals returns the admin.refused audit events as actor → outcome.
func refusals(t *testing.T, d *harness.Dev) map[string]string {
	t.Helper()
	out := map[string]string{}
	events, _ := ctlJSON(t, d, "audit", "list", "--action", "admin.refused")["events"].([]any)
	for _, x := range events {
		e := x.(map[string]any)
		out[e["actor"].(string)] = e["outcome"].(string)
	}
	return out
}

// eventuallyRefused waits for the (queued) audit event of a refusal.
func eventuallyRefused(t *testing.T, d *harness.Dev, actor, code string) {
	t.Helper()
	require.Eventually(t, func() bool { return refusals(t, d)[actor] == code }, 10*time.Second, 100*time.Millisecond,
		"no admin.refused audit event for %s with %s", actor, code)
}

func TestAdminAuth(t *testing.T) {
	const adminID = "spiffe://cluster.local/ns/ops/sa/admin"
	d := harness.StartDev(t, harness.Options{Dir: sharedDir(t), Args: []string{"--admin-id", adminID}})
	ctlAs := harness.CtlBinaryFor(t)

	t.Run("socket mode refuses another uid", func(t *testing.T) {
		fi, err := os.Stat(d.AdminSocket())
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		res := harness.Ctl(t, harness.CtlOptions{Binary: ctlAs, Credential: &syscall.Credential{Uid: nobody, Gid: nobody}},
			"--socket", d.AdminSocket(), "agents", "list")
		require.Equal(t, 5, res.Code, "exit code: unavailable; stderr: %s", res.Stderr)
		require.Contains(t, res.Stderr, "permission denied")
	})

	t.Run("no client certificate", func(t *testing.T) {
		conn, err := grpc.NewClient(d.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.TLSClientConfig(d.Bundle(t), tlsconfig.AuthorizeID(d.CAID())))))
		require.NoError(t, err)
		defer conn.Close()
		_, err = adminv1.NewAdminServiceClient(conn).ListAgents(harness.Context(t), &adminv1.ListAgentsRequest{})
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
		eventuallyRefused(t, d, "anonymous", "Unauthenticated")
	})

	t.Run("non-admin SVID", func(t *testing.T) {
		// The dev agent attests this process as default/default.
		res := harness.Ctl(t, harness.CtlOptions{}, "--addr", d.GRPCAddr, "--workload-api", "unix://"+d.SocketPath(), "agents", "list")
		require.Equal(t, 4, res.Code, "exit code: refused; stderr: %s", res.Stderr)
		require.Contains(t, res.Stderr, "PermissionDenied")
		eventuallyRefused(t, d, d.WorkloadID("default", "default").String(), "PermissionDenied")
	})

	t.Run("admin SVID", func(t *testing.T) {
		a := harness.StartAgent(t, d, harness.AgentOptions{Node: "node-ops", UnixRules: []harness.UnixRule{
			{UID: uint32(os.Getuid()), Namespace: "ops", ServiceAccount: "admin"}}})
		a.WaitReady(t, 30*time.Second)
		res := harness.Ctl(t, harness.CtlOptions{}, "--addr", d.GRPCAddr, "--workload-api", "unix://"+a.SocketPath, "agents", "show", "node-ops")
		require.Equal(t, 0, res.Code, res.Stderr)
		require.Contains(t, res.Stdout, d.AgentID("node-ops").String())

		// The same SVID from files, with --cert, --key and --bundle.
		x := fetchX509(t, workloadClient(t, a.SocketPath), 30*time.Second)
		certPEM, keyPEM, err := x.DefaultSVID().Marshal()
		require.NoError(t, err)
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "svid.pem"), certPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600))
		res = harness.Ctl(t, harness.CtlOptions{}, "--addr", d.GRPCAddr, "--bundle", d.BundlePath(),
			"--cert", filepath.Join(dir, "svid.pem"), "--key", filepath.Join(dir, "key.pem"), "identities", "deny",
			d.WorkloadID("default", "api").String())
		require.Equal(t, 0, res.Code, res.Stderr)
		list := ctlJSON(t, d, "identities", "list")["identities"].([]any)
		require.Len(t, list, 1)
		require.Equal(t, adminID, list[0].(map[string]any)["actor"], "the deny list names the admin SVID as its author")
	})

	t.Run("open socket, uid not allowed", func(t *testing.T) {
		e := harness.StartDev(t, harness.Options{Dir: sharedDir(t), Args: []string{"--admin-socket-mode", "0666", "--agent=false"}})
		res := harness.Ctl(t, harness.CtlOptions{Binary: ctlAs, Credential: &syscall.Credential{Uid: nobody, Gid: nobody}},
			"--socket", e.AdminSocket(), "certs", "list")
		require.Equal(t, 4, res.Code, "exit code: refused; stderr: %s", res.Stderr)
		require.Contains(t, res.Stderr, "PermissionDenied")
		eventuallyRefused(t, e, "uid:65534", "PermissionDenied")
	})

	t.Run("usage errors", func(t *testing.T) {
		res := harness.Ctl(t, harness.CtlOptions{}, "--socket", d.AdminSocket(), "certs", "show")
		require.Equal(t, 2, res.Code, res.Stderr)
		res = harness.Ctl(t, harness.CtlOptions{}, "--socket", d.AdminSocket(), "certs", "show", "feedbeef")
		require.Equal(t, 3, res.Code, "not found: %s", res.Stderr)
		res = harness.Ctl(t, harness.CtlOptions{}, "--socket", d.AdminSocket(), "identities", "deny", "spiffe://other.org/x")
		require.Equal(t, 6, res.Code, "invalid: %s", res.Stderr)
	})
}
