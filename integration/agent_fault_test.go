package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/integration/harness"
)

const (
	// outageTTL is the SVID TTL of the outage test: long enough that the
	// SVIDs outlive the outage, short enough that a renewal comes due (and
	// fails, and backs off) during it.
	outageTTL = 16 * time.Second
	// renewBudget: an agent renews within this long of the CA's return.
	renewBudget = 10 * time.Second
	// cachedServeBudget: an agent restarted during an outage serves its
	// cached SVIDs within this long of being started.
	cachedServeBudget = 2 * time.Second
)

// TestAgentOutage: a CA (`lanyard dev --agent=false`) and two separate
// `lanyard agent` processes with disk caches. The CA is killed: agent A
// keeps serving its SVID over the Workload API while its outage budget
// metric falls; agent B is killed and started again during the outage and
// serves its cached SVID at once. Renewals come due and fail while the CA
// is down. The CA is started again on the same directory and ports: both
// agents renew within renewBudget of its return.
func TestAgentOutage(t *testing.T) {
	t.Parallel()
	ca := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	want := ca.WorkloadID("default", "default")
	bundle := ca.Bundle(t)
	a := harness.StartAgent(t, ca, harness.AgentOptions{Node: "node-a", SVIDTTL: outageTTL})
	b := harness.StartAgent(t, ca, harness.AgentOptions{Node: "node-b", SVIDTTL: outageTTL})
	a.WaitReady(t, harness.CallTimeout)
	b.WaitReady(t, harness.CallTimeout)

	wa := watchX509(t, workloadClient(t, a.SocketPath))
	svidA := wa.waitFor(t, harness.CallTimeout, "first SVID", func(u x509Update) bool { return u.svid != nil }).svid
	requireSVID(t, svidA, bundle, want)
	svidB := requireX509Context(t, fetchX509(t, workloadClient(t, b.SocketPath), harness.CallTimeout), bundle, want)
	eventually(t, 5*time.Second, "agent B's disk cache holds its SVID", func() bool { return cacheHolds(t, b.CacheFile, svidB) })

	ca.Kill()
	t.Logf("CA killed; SVIDs expire in %s (A) and %s (B)",
		time.Until(svidA.Certificates[0].NotAfter).Round(time.Millisecond), time.Until(svidB.Certificates[0].NotAfter).Round(time.Millisecond))

	// Agent A keeps serving its SVID, and its outage budget falls.
	got := requireX509Context(t, fetchX509(t, workloadClient(t, a.SocketPath), harness.CallTimeout), bundle, want)
	require.Equal(t, serial(svidA.Certificates[0]), serial(got.Certificates[0]), "agent A serves another SVID")
	b1 := a.Metric(t, harness.MetricOutageBudget)
	require.Greater(t, b1, 0.0)
	require.LessOrEqual(t, b1, outageTTL.Seconds())
	require.InDelta(t, time.Until(svidA.Certificates[0].NotAfter).Seconds(), b1, 1.5, "budget vs. the SVID's expiry")
	var b2 float64
	took := eventually(t, 5*time.Second, "the outage budget falls", func() bool {
		b2 = a.Metric(t, harness.MetricOutageBudget)
		return b2 <= b1-1
	})
	t.Logf("agent A's outage budget %.1fs → %.1fs in %s", b1, b2, took.Round(time.Millisecond))
	require.Greater(t, b2, 0.0)

	// Agent B, killed and started again during the outage, serves its
	// cached SVID at once.
	b.Kill()
	start := time.Now()
	b = b.Restart(t)
	left := cachedServeBudget - time.Since(start)
	require.Positive(t, left, "the agent took %s to start", time.Since(start))
	got = requireX509Context(t, fetchX509(t, workloadClient(t, b.SocketPath), left), bundle, want)
	t.Logf("restarted agent B served its cached SVID %s after its start", time.Since(start).Round(time.Millisecond))
	require.Equal(t, serial(svidB.Certificates[0]), serial(got.Certificates[0]), "not the cached SVID")
	require.Greater(t, b.Metric(t, harness.MetricOutageBudget), 0.0)
	t.Logf("restarted agent B's /readyz during the outage: %d", b.Readyz(t))
	wb := watchX509(t, workloadClient(t, b.SocketPath))

	// Renewals come due and fail while the CA is down, so that the return
	// is noticed through the backoff, not at a scheduled renewal.
	eventually(t, outageTTL, "agent A's renewal fails", func() bool {
		return a.Metric(t, harness.MetricRenewFailures, `code="Unavailable"`) >= 1
	})
	eventually(t, outageTTL, "agent B's renewal fails", func() bool {
		return b.Metric(t, harness.MetricRenewFailures, `code="Unavailable"`) >= 1
	})
	// Both still serve their valid SVIDs at the end of the outage.
	for _, ag := range []struct {
		name  string
		agent *harness.NodeAgent
		svid  *x509svid.SVID
	}{{"A", a, svidA}, {"B", b, svidB}} {
		got := requireX509Context(t, fetchX509(t, workloadClient(t, ag.agent.SocketPath), harness.CallTimeout), bundle, want)
		require.Equal(t, serial(ag.svid.Certificates[0]), serial(got.Certificates[0]), "agent %s", ag.name)
		t.Logf("agent %s: %v renewals failed Unavailable during the outage", ag.name,
			ag.agent.Metric(t, harness.MetricRenewFailures, `code="Unavailable"`))
	}

	ca2 := ca.Restart(t)
	back := time.Now()
	t.Logf("CA back on %s; SVIDs expire in %s (A) and %s (B)", ca2.GRPCAddr,
		time.Until(svidA.Certificates[0].NotAfter).Round(time.Millisecond), time.Until(svidB.Certificates[0].NotAfter).Round(time.Millisecond))
	for _, tt := range []struct {
		name  string
		agent *harness.NodeAgent
		watch *x509Watch
		old   *x509svid.SVID
	}{
		{name: "agent A renews", agent: a, watch: wa, old: svidA},
		{name: "agent B (restarted during the outage) renews", agent: b, watch: wb, old: svidB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := serial(tt.old.Certificates[0])
			u := tt.watch.waitFor(t, renewBudget-time.Since(back), "renewal after the CA's return", func(u x509Update) bool {
				return u.svid != nil && serial(u.svid.Certificates[0]) != old
			})
			t.Logf("%s: new SVID %s, %s after the CA was ready", tt.name, serial(u.svid.Certificates[0]), u.at.Sub(back).Round(time.Millisecond))
			requireSVID(t, u.svid, ca2.Bundle(t), want)
			require.True(t, ca2.HasCertificate(t, serial(u.svid.Certificates[0])))
			tt.agent.WaitReady(t, harness.CallTimeout)
			// The outage budget follows the new SVID (refreshed within a second).
			eventually(t, 2*time.Second, "the outage budget counts the new SVID", func() bool {
				return tt.agent.Metric(t, harness.MetricOutageBudget) > time.Until(tt.old.Certificates[0].NotAfter).Seconds()+1
			})
		})
	}
}

// cacheHolds tells whether the agent's disk cache at path holds svid's
// leaf. The format is agent/diskcache.go's: a JSON envelope whose body is
// JSON (both []byte, so base64) with each chain as DER.
func cacheHolds(t *testing.T, path string, svid *x509svid.SVID) bool {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var envelope struct {
		Body []byte `json:"body"`
	}
	require.NoError(t, json.Unmarshal(raw, &envelope), "agent cache %s", path)
	return bytes.Contains(envelope.Body, []byte(base64.StdEncoding.EncodeToString(svid.Certificates[0].Raw)))
}

// TestAgentUnixUsers: on an agent socket every user may reach (0666), a
// user the unix attestor maps gets its identity, and a user with no
// mapping (uid 65534, nobody) is refused PermissionDenied on the Workload
// API and on SDS. The clients run as those users in separate processes.
func TestAgentUnixUsers(t *testing.T) {
	t.Parallel()
	require.Zero(t, os.Geteuid(), "this test starts clients as other users and must run as root")
	ca := harness.StartDev(t, harness.Options{Args: []string{"--agent=false"}})
	a := harness.StartAgent(t, ca, harness.AgentOptions{Node: "node-u", SocketMode: "0666", UnixRules: []harness.UnixRule{
		{UID: uint32(os.Getuid()), Namespace: "default", ServiceAccount: "default"},
		{UID: 65533, Namespace: "shop", ServiceAccount: "api"},
	}})
	a.WaitReady(t, harness.CallTimeout)
	fi, err := os.Stat(a.SocketPath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o666), fi.Mode().Perm(), "socket mode")

	// The invoking user (root) is default/default.
	requireX509Context(t, fetchX509(t, workloadClient(t, a.SocketPath), harness.CallTimeout), ca.Bundle(t), ca.WorkloadID("default", "default"))
	for _, tt := range []struct {
		name     string
		uid      uint32
		want     codes.Code
		spiffeID string
	}{
		{name: "mapped user", uid: 65533, want: codes.OK, spiffeID: ca.WorkloadID("shop", "api").String()},
		{name: "unmapped user", uid: 65534, want: codes.PermissionDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := harness.CallAs(t, a.SocketPath, tt.uid, tt.uid)
			t.Logf("uid %d: Workload API %+v, SDS %+v, FetchSecrets %+v", res.UID, res.WorkloadAPI, res.SDS, res.SDSFetch)
			require.Equal(t, int(tt.uid), res.UID)
			require.Equal(t, tt.want.String(), res.WorkloadAPI.Code, "Workload API: %s", res.WorkloadAPI.Message)
			require.Equal(t, tt.spiffeID, res.WorkloadAPI.SPIFFEID)
			require.Equal(t, tt.want.String(), res.SDS.Code, "StreamSecrets: %s", res.SDS.Message)
			require.Equal(t, tt.want.String(), res.SDSFetch.Code, "FetchSecrets: %s", res.SDSFetch.Message)
		})
	}
}
