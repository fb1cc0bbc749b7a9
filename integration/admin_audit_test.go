package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// TestAuditSummariesAndFollow: `audit list --follow` streams entries as
// they are appended (an admin change, then the periodic issuance and
// rejection summaries).
func TestAuditSummariesAndFollow(t *testing.T) {
	d := harness.StartDev(t, harness.Options{Args: []string{"--agent=false", "--audit-summary-interval=1s"}})
	a := d.NewAgent(t, "node-a")

	// The log is not empty, so --follow --limit 1 prints one entry at once:
	// then it is streaming, and nothing appended later can be missed.
	ctl(t, d, "identities", "deny", d.WorkloadID("default", "old").String())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, harness.CtlBinary(t), "--socket", d.AdminSocket(), "audit", "list", "--follow", "--limit", "1", "-o", "json")
	out, err := follow.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, follow.Start())
	defer func() { cancel(); _ = follow.Wait() }()
	lines := make(chan map[string]any)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				select {
				case lines <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	select {
	case _, ok := <-lines:
		require.True(t, ok, "--follow printed nothing")
	case <-ctx.Done():
		t.Fatal("--follow printed nothing")
	}
	id := d.WorkloadID("default", "api").String()
	ctl(t, d, "identities", "deny", id)
	require.Equal(t, codes.PermissionDenied, agentSign(t, d, a, "default", "api"))
	require.Equal(t, codes.OK, agentSign(t, d, a, "default", "web"))

	want := map[string]bool{"admin.deny-identity:requested": false, "admin.deny-identity:ok": false,
		"issue-summary:ok": false, "reject-summary:PermissionDenied": false}
	var seen []string
	for !allTrue(want) {
		select {
		case e, ok := <-lines:
			require.True(t, ok, "--follow ended; saw %v", seen)
			key := e["action"].(string) + ":" + e["outcome"].(string)
			seen = append(seen, key+" "+e["subject"].(string)+" "+e["detail"].(string))
			switch key {
			case "issue-summary:ok": // the agent's SVID may be summed up earlier, alone
				want[key] = want[key] || strings.Contains(e["detail"].(string), "workload=1")
			case "reject-summary:PermissionDenied":
				want[key] = strings.HasSuffix(e["subject"].(string), "BatchSignSVIDs:entry")
			default:
				if _, ok := want[key]; ok {
					want[key] = true
				}
			}
		case <-ctx.Done():
			t.Fatalf("--follow did not stream %v; saw %v", want, seen)
		}
	}
}

func allTrue(m map[string]bool) bool {
	for _, v := range m {
		if !v {
			return false
		}
	}
	return true
}
