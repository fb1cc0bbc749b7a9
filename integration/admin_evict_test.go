package integration

import (
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// istioSign asks Istio's CreateCertificate for ns/sa with a token of
// audience istio-ca and returns the call's code.
func istioSign(t *testing.T, d *harness.Dev, ns, sa string) codes.Code {
	t.Helper()
	conn, err := grpc.NewClient(d.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(d.Bundle(t), tlsconfig.AuthorizeID(d.CAID())))))
	require.NoError(t, err)
	defer conn.Close()
	tok := d.Token(t, ns, sa, "--audience", "istio-ca")
	csr := harness.NewCSR(t, harness.CSROptions{})
	ctx := metadata.AppendToOutgoingContext(harness.Context(t), "authorization", "Bearer "+tok, "ClusterID", "Kubernetes")
	resp, err := istiopb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &istiopb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.DER})), ValidityDuration: 3600,
	})
	if err == nil {
		require.NotEmpty(t, resp.GetCertChain())
	}
	return status.Code(err)
}

// agentSign asks for ns/sa through agent a with a workload token and
// returns the entry's code.
func agentSign(t *testing.T, d *harness.Dev, a *harness.Agent, ns, sa string) codes.Code {
	t.Helper()
	csr := harness.NewCSR(t, harness.CSROptions{})
	res := signOne(t, a, entry("1", workloadToken(t, d, a, ns, sa), csr.DER, 0))
	return codes.Code(res.GetCode())
}

// TestAdminDenyIdentity: a denied identity gets no new certificate through
// the agent API nor Istio's, from the next request on, on this replica and
// (within the control poll) on another replica sharing the store; allowing
// it again restores both.
func TestAdminDenyIdentity(t *testing.T) {
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false", "--replica-name", "ca-1"}})
	// A second replica: another process on the same store and root.
	r2 := harness.StartDev(t, harness.Options{Dir: d.Dir, Args: []string{"--agent=false", "--replica-name", "ca-2",
		"--admin-socket", filepath.Join(d.Dir, "admin-2.sock")}})
	// Each replica's status shows both, serving, each with its own active intermediate.
	require.Eventually(t, func() bool {
		st := ctlJSON(t, d, "ca", "status")
		replicas, _ := st["replicas"].([]any)
		inter, _ := st["intermediates"].([]any)
		if len(replicas) != 2 || len(inter) != 2 {
			return false
		}
		for i, name := range []string{"ca-1", "ca-2"} {
			r := replicas[i].(map[string]any)
			if r["name"] != name || r["health"] != "serving" {
				return false
			}
		}
		return inter[0].(map[string]any)["subjectKeyId"] != inter[1].(map[string]any)["subjectKeyId"]
	}, 15*time.Second, 200*time.Millisecond, "ca status never showed both replicas")
	a := d.NewAgent(t, "node-a")
	a2 := r2.NewAgent(t, "node-b")
	require.Equal(t, codes.OK, agentSign(t, d, a, "default", "api"))
	require.Equal(t, codes.OK, istioSign(t, d, "default", "api"))

	id := d.WorkloadID("default", "api").String()
	ctl(t, d, "identities", "deny", id, "--reason", "test")
	require.Equal(t, codes.PermissionDenied, agentSign(t, d, a, "default", "api"), "agent API, same replica, next request")
	require.Equal(t, codes.PermissionDenied, istioSign(t, d, "default", "api"), "Istio API, same replica, next request")
	require.Equal(t, codes.OK, agentSign(t, d, a, "default", "web"), "other identities are unaffected")
	require.Eventually(t, func() bool { return agentSign(t, r2, a2, "default", "api") == codes.PermissionDenied },
		5*time.Second, 100*time.Millisecond, "the other replica never refused the denied identity")
	require.Equal(t, codes.PermissionDenied, istioSign(t, r2, "default", "api"))

	ctl(t, d, "identities", "allow", id)
	require.Equal(t, codes.OK, agentSign(t, d, a, "default", "api"))
	require.Equal(t, codes.OK, istioSign(t, d, "default", "api"))
	require.Eventually(t, func() bool { return agentSign(t, r2, a2, "default", "api") == codes.OK },
		5*time.Second, 100*time.Millisecond, "the other replica never allowed the identity again")
}

// TestAdminEvictBan: an evicted agent's next BatchSignSVIDs fails
// PermissionDenied on every replica; it may attest again with a valid
// token; a banned one may not, until unbanned.
func TestAdminEvictBan(t *testing.T) {
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	r2 := harness.StartDev(t, harness.Options{Dir: d.Dir, Args: []string{"--agent=false", "--admin-socket", filepath.Join(d.Dir, "admin-2.sock")}})
	a := d.NewAgent(t, "node-a")
	onR2 := r2.DialAgent(t, a.SVID)
	require.Equal(t, codes.OK, agentSign(t, d, a, "default", "web"))

	out := ctl(t, d, "agents", "evict", "node-a")
	require.Contains(t, out, "Evicted:")
	batch := &cav1.BatchSignSVIDsRequest{Requests: []*cav1.SVIDRequest{
		entry("1", workloadToken(t, d, a, "default", "web"), harness.NewCSR(t, harness.CSROptions{}).DER, 0)}}
	_, err := a.Client.BatchSignSVIDs(harness.Context(t), batch)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "same replica, next call: %v", err)
	require.Eventually(t, func() bool {
		_, err := onR2.BatchSignSVIDs(harness.Context(t), batch)
		return status.Code(err) == codes.PermissionDenied
	}, 5*time.Second, 100*time.Millisecond, "the other replica kept accepting the evicted SVID")
	revoked := ctlJSON(t, d, "certs", "list", "--revoked", "--kind", "agent")["certificates"].([]any)
	require.Len(t, revoked, 1)
	require.Equal(t, serial(a.SVID.Certificates[0]), revoked[0].(map[string]any)["serial"])

	// A valid token attests again; the new SVID works.
	again := d.NewAgent(t, "node-a")
	require.Equal(t, codes.OK, agentSign(t, d, again, "default", "web"))

	ctl(t, d, "agents", "ban", "node-a")
	_, _, err = d.AttestAgent(t, d.AgentToken(t, "node-a"), harness.NewCSR(t, harness.CSROptions{}))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "banned agent attests: %v", err)
	_, err = again.Client.BatchSignSVIDs(harness.Context(t), batch)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "banned agent's SVID: %v", err)
	require.Contains(t, ctl(t, d, "agents", "list"), "banned")

	ctl(t, d, "agents", "unban", "node-a")
	_, _, err = d.AttestAgent(t, d.AgentToken(t, "node-a"), harness.NewCSR(t, harness.CSROptions{}))
	require.NoError(t, err)

	// Every change is in the audit log, requested before its outcome.
	events := ctlJSON(t, d, "audit", "list", "--actor", "uid:0")["events"].([]any)
	var seen []string
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i].(map[string]any)
		if strings.HasPrefix(e["action"].(string), "admin.") && !strings.Contains(e["action"].(string), "list") {
			seen = append(seen, e["action"].(string)+":"+e["outcome"].(string))
		}
	}
	require.Subset(t, seen, []string{"admin.evict-agent:requested", "admin.evict-agent:ok", "admin.ban-agent:requested",
		"admin.ban-agent:ok", "admin.unban-agent:requested", "admin.unban-agent:ok"})
}

// TestAgentWorkloadsStopRenewingAfterEviction: a real agent process whose
// SVID was evicted gets PermissionDenied on its renewals, and no new
// certificate is issued for its workload.
func TestAgentWorkloadsStopRenewingAfterEviction(t *testing.T) {
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	a := harness.StartAgent(t, d, harness.AgentOptions{Node: "node-a", SVIDTTL: 4 * time.Second})
	a.WaitReady(t, 30*time.Second)
	fetchX509(t, workloadClient(t, a.SocketPath), 30*time.Second)
	id := d.WorkloadID("default", "default").String()
	// It renews while allowed.
	require.Eventually(t, func() bool {
		return len(ctlJSON(t, d, "certs", "list", "--spiffe-id", id)["certificates"].([]any)) >= 2
	}, 15*time.Second, 200*time.Millisecond, "the workload SVID was never renewed")

	ctl(t, d, "agents", "evict", "node-a")
	evicted := time.Now()
	before := a.Metric(t, "lanyard_agent_renew_failures_total", `code="PermissionDenied"`)
	require.Eventually(t, func() bool {
		return a.Metric(t, "lanyard_agent_renew_failures_total", `code="PermissionDenied"`) >= before+2
	}, 20*time.Second, 200*time.Millisecond, "the evicted agent's renewals were not refused")
	after := ctlJSON(t, d, "certs", "list", "--spiffe-id", id, "--issued-since", evicted.UTC().Format(time.RFC3339Nano))
	require.Empty(t, after["certificates"], "a certificate was issued through the evicted agent")
}
