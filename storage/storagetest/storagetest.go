package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// Run runs the conformance suite against stores made by newStore. Each
// subtest gets a new, empty store; newStore registers its cleanup with
// t.Cleanup (Close must tolerate being called again, some subtests close
// the store themselves). Subtests do not run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	t.Helper()
	for _, tt := range []struct {
		name string
		test func(t *testing.T, s storage.Store)
	}{
		{"RecordGetRoundTrip", testRoundTrip},
		{"RecordBatchAtomic", testBatchAtomic},
		{"RecordInvalid", testRecordInvalid},
		{"GetNotFound", testGetNotFound},
		{"ListFilters", testListFilters},
		{"ListPaging", testListPaging},
		{"ListPageSize", testListPageSize},
		{"ListBadPageToken", testListBadPageToken},
		{"Revoke", testRevoke},
		{"Count", testCount},
		{"AgentUpsertKeepsFirstSeenAndBanned", testAgentUpsert},
		{"AgentBanUnban", testAgentBan},
		{"AgentNotFound", testAgentNotFound},
		{"ListAgentsOrdered", testListAgents},
		{"AuditAppendList", testAuditAppendList},
		{"AuditFilters", testAuditFilters},
		{"AuditPaging", testAuditPaging},
		{"ListAdminFilters", testListAdminFilters},
		{"CountBy", testCountBy},
		{"AuditFollow", testAuditFollow},
		{"AuditFollowConcurrent", testAuditFollowConcurrent},
		{"AgentReports", testAgentReports},
		{"EvictAgent", testEvictAgent},
		{"DenyList", testDenyList},
		{"ControlSequence", testControlSequence},
		{"Replicas", testReplicas},
		{"ConcurrentRecord", testConcurrentRecord},
		{"Ping", testPing},
		{"ClosedStore", testClosed},
		{"CancelledContext", testCancelled},
		{"PruneExpired", testPrune},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.test(t, newStore(t))
		})
	}
}

// base is the suite's reference time: UTC with nanoseconds, so that a store
// truncating to micro- or milliseconds fails the round trip.
var base = time.Date(2031, time.March, 14, 15, 9, 26, 535897932, time.UTC)

// cert returns a valid workload certificate record numbered i, issued at
// base + i seconds.
func cert(i int) storage.CertificateRecord {
	issued := base.Add(time.Duration(i) * time.Second)
	return storage.CertificateRecord{
		Serial:         fmt.Sprintf("%x", 0x7a3f0000+i),
		SPIFFEID:       fmt.Sprintf("spiffe://cluster.local/ns/default/sa/sa-%d", i),
		Kind:           "workload",
		Cluster:        "kind",
		Namespace:      "default",
		ServiceAccount: fmt.Sprintf("sa-%d", i),
		PodName:        fmt.Sprintf("pod-%d", i),
		PodUID:         fmt.Sprintf("0b6c7a4e-0000-4000-8000-%012d", i),
		NodeName:       "node-1",
		Caller:         "spiffe://cluster.local/lanyard/agent/kind/node-1",
		NotBefore:      issued.Add(-time.Minute),
		NotAfter:       issued.Add(time.Hour),
		SHA256:         []byte(fmt.Sprintf("%032d", i)),
		IssuerKeyID:    "5e1f00aa",
		IssuedAt:       issued,
	}
}

// certs returns cert(from) .. cert(to-1).
func certs(from, to int) []storage.CertificateRecord {
	var recs []storage.CertificateRecord
	for i := from; i < to; i++ {
		recs = append(recs, cert(i))
	}
	return recs
}

func serials(recs []storage.CertificateRecord) []string {
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Serial)
	}
	return out
}
