package integration

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// adminEnv is a dev CA (with its in-process agent on dev-node) and two
// `lanyard agent` processes, each serving one workload SVID to this test
// process under another service account.
type adminEnv struct {
	dev  *harness.Dev
	a, b *harness.NodeAgent
}

func startAdminEnv(t *testing.T, opts harness.Options) *adminEnv {
	t.Helper()
	d := harness.StartDev(t, opts)
	uid := uint32(os.Getuid())
	e := &adminEnv{dev: d}
	e.a = harness.StartAgent(t, d, harness.AgentOptions{Node: "node-a", UnixRules: []harness.UnixRule{{UID: uid, Namespace: "shop", ServiceAccount: "web"}}})
	e.a.WaitReady(t, 30*time.Second)
	fetchX509(t, workloadClient(t, e.a.SocketPath), 30*time.Second)
	e.b = harness.StartAgent(t, d, harness.AgentOptions{Node: "node-b", UnixRules: []harness.UnixRule{{UID: uid, Namespace: "shop", ServiceAccount: "db"}}})
	e.b.WaitReady(t, 30*time.Second)
	fetchX509(t, workloadClient(t, e.b.SocketPath), 30*time.Second)
	fetchX509(t, workloadClient(t, d.SocketPath()), 30*time.Second)
	return e
}

// agentsSettled waits until agents list shows, for every agent, the bundle
// sequence the agent process itself reports holding (its
// lanyard_agent_bundle_sequence gauge) and one workload.
func (e *adminEnv) agentsSettled(t *testing.T) []any {
	t.Helper()
	want := map[string]float64{
		e.dev.AgentID("node-a").String():        e.a.Metric(t, "lanyard_agent_bundle_sequence"),
		e.dev.AgentID("node-b").String():        e.b.Metric(t, "lanyard_agent_bundle_sequence"),
		e.dev.AgentID(harness.DevNode).String(): e.dev.AgentMetric(t, "lanyard_agent_bundle_sequence"),
	}
	for id, seq := range want {
		require.Positive(t, seq, "agent %s holds no bundle", id)
	}
	var agents []any
	require.Eventually(t, func() bool {
		agents, _ = ctlJSON(t, e.dev, "agents", "list")["agents"].([]any)
		if len(agents) != len(want) {
			return false
		}
		for _, x := range agents {
			a := x.(map[string]any)
			seq, _ := a["bundleSequence"].(string) // int64 is a string in JSON
			if seq != formatSeq(want[a["spiffeId"].(string)]) || a["workloads"] != "1" {
				return false
			}
		}
		return true
	}, 20*time.Second, 200*time.Millisecond, "agents list never showed each agent's bundle sequence and workloads: %v", agents)
	return agents
}

func formatSeq(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }

// TestAdminCLIGolden checks each lanyardctl command's table and JSON output
// against a real `lanyard dev` with three agents and three workloads.
func TestAdminCLIGolden(t *testing.T) {
	e := startAdminEnv(t, harness.Options{})
	d := e.dev
	n := newNormalizer(d.Dir)
	e.agentsSettled(t)

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"agents-list", []string{"agents", "list"}},
		{"agents-show", []string{"agents", "show", "node-a"}},
		{"certs-list-workloads", []string{"certs", "list", "--kind", "workload"}},
		{"certs-list-node", []string{"certs", "list", "--node", "node-b"}},
		{"certs-list-agent", []string{"certs", "list", "--agent", "node-a", "--service-account", "web", "--expiring-within", "2h"}},
		{"certs-count-identity", []string{"certs", "count", "--by", "identity", "--valid"}},
		{"certs-count-node", []string{"certs", "count", "--by", "node"}},
		{"bundle-show", []string{"bundle", "show"}},
		{"ca-status", []string{"ca", "status"}},
		{"identities-list-empty", []string{"identities", "list"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, n, tt.name, ctl(t, d, tt.args...))
			golden(t, n, tt.name+".json", ctl(t, d, append(tt.args, "-o", "json")...))
		})
	}

	// certs show of the node-a workload's certificate, found by listing.
	list := ctlJSON(t, d, "certs", "list", "--spiffe-id", d.WorkloadID("shop", "web").String())
	certs := list["certificates"].([]any)
	require.Len(t, certs, 1)
	serial := certs[0].(map[string]any)["serial"].(string)
	golden(t, n, "certs-show", ctl(t, d, "certs", "show", serial))
	golden(t, n, "certs-show.json", ctl(t, d, "certs", "show", serial, "-o", "json"))

	// Paging: one certificate per page, cursor to the next.
	res := harness.Ctl(t, harness.CtlOptions{}, "--socket", d.AdminSocket(), "certs", "list", "--kind", "workload", "--limit", "1")
	require.Equal(t, 0, res.Code, res.Stderr)
	require.Contains(t, res.Stderr, "more: --page-token ")
	token := strings.TrimSpace(strings.TrimPrefix(res.Stderr, "more: --page-token "))
	page2 := ctlJSON(t, d, "certs", "list", "--kind", "workload", "--limit", "1", "--page-token", token)
	require.Len(t, page2["certificates"], 1)
	require.NotEqual(t, res.Stdout, ctl(t, d, "certs", "list", "--kind", "workload", "--limit", "1", "--page-token", token))

	// Deny list round trip; the audit log shows each change before and after.
	golden(t, n, "identities-deny", ctl(t, d, "identities", "deny", d.WorkloadID("shop", "web").String(), "--reason", "compromised"))
	golden(t, n, "identities-list", ctl(t, d, "identities", "list"))
	golden(t, n, "identities-list.json", ctl(t, d, "identities", "list", "-o", "json"))
	golden(t, n, "identities-allow", ctl(t, d, "identities", "allow", d.WorkloadID("shop", "web").String()))
	audit := ctl(t, d, "audit", "list", "--action", "admin.deny-identity")
	golden(t, n, "audit-list", auditIDRE.ReplaceAllString(audit, "<id>$1"))
	auditJSON := ctl(t, d, "audit", "list", "--action", "admin.deny-identity", "-o", "json")
	golden(t, n, "audit-list.json", jsonIDRE.ReplaceAllString(auditJSON, `"id": "<id>"`))

	// YAML is the JSON document as YAML.
	golden(t, n, "agents-list.yaml", ctl(t, d, "agents", "list", "-o", "yaml"))
}
