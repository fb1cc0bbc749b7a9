package storagetest

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

// testListAdminFilters checks the filters lanyardctl uses: service account,
// caller, expiring before, issued since and revoked.
func testListAdminFilters(t *testing.T, s storage.Store) {
	ctx := t.Context()
	recs := certs(0, 6)
	recs[1].Caller = "spiffe://cluster.local/lanyard/agent/kind/node-2"
	recs[2].ServiceAccount = "web"
	require.NoError(t, s.RecordCertificates(ctx, recs))
	require.NoError(t, s.RevokeCertificate(ctx, recs[4].Serial, base))
	for _, tt := range []struct {
		name string
		f    storage.CertificateFilter
		want []string
	}{
		{"service account", storage.CertificateFilter{ServiceAccount: "web"}, []string{recs[2].Serial}},
		{"caller", storage.CertificateFilter{Caller: recs[1].Caller}, []string{recs[1].Serial}},
		// NotAfter of cert(i) is base + i s + 1h: strictly before.
		{"expires before", storage.CertificateFilter{ExpiresBefore: recs[2].NotAfter}, []string{recs[1].Serial, recs[0].Serial}},
		{"issued since", storage.CertificateFilter{IssuedSince: recs[4].IssuedAt}, []string{recs[5].Serial, recs[4].Serial}},
		{"revoked", storage.CertificateFilter{Revoked: true}, []string{recs[4].Serial}},
		{"combined", storage.CertificateFilter{Revoked: true, ServiceAccount: "web"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			page, err := s.ListCertificates(ctx, tt.f)
			require.NoError(t, err)
			require.Equal(t, tt.want, nilIfEmpty(serials(page.Certificates)))
		})
	}
}

func testCountBy(t *testing.T, s storage.Store) {
	ctx := t.Context()
	recs := certs(0, 5)
	for i := range recs {
		recs[i].SPIFFEID = "spiffe://cluster.local/ns/default/sa/web"
		recs[i].NodeName = "node-1"
	}
	recs[3].SPIFFEID, recs[3].NodeName = "spiffe://cluster.local/ns/default/sa/db", "node-2"
	recs[4].SPIFFEID, recs[4].NodeName = "spiffe://cluster.local/ns/default/sa/api", "node-2"
	require.NoError(t, s.RecordCertificates(ctx, recs))

	got, err := s.CountCertificatesBy(ctx, storage.GroupBySPIFFEID, storage.CertificateFilter{})
	require.NoError(t, err)
	require.Equal(t, []storage.GroupCount{
		{Key: "spiffe://cluster.local/ns/default/sa/web", Count: 3},
		{Key: "spiffe://cluster.local/ns/default/sa/api", Count: 1},
		{Key: "spiffe://cluster.local/ns/default/sa/db", Count: 1},
	}, got)
	got, err = s.CountCertificatesBy(ctx, storage.GroupByNode, storage.CertificateFilter{Namespace: "default", PageSize: 1})
	require.NoError(t, err)
	require.Equal(t, []storage.GroupCount{{Key: "node-1", Count: 3}, {Key: "node-2", Count: 2}}, got)
	got, err = s.CountCertificatesBy(ctx, storage.GroupByNode, storage.CertificateFilter{ValidAt: base.Add(24 * time.Hour)})
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = s.CountCertificatesBy(ctx, "pod", storage.CertificateFilter{})
	require.ErrorIs(t, err, storage.ErrInvalidArgument)
}

func testAuditFollow(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for i := range 5 {
		require.NoError(t, s.AppendAudit(ctx, []storage.AuditEvent{event(i, "system", "issue")}))
	}
	all, err := s.ListAudit(ctx, storage.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, all, 5)
	after := all[3].ID // the second oldest
	got, err := s.ListAudit(ctx, storage.AuditFilter{AfterID: after, PageSize: 2})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, all[2].ID, got[0].ID, "oldest first")
	require.Equal(t, all[1].ID, got[1].ID)
	got, err = s.ListAudit(ctx, storage.AuditFilter{AfterID: all[0].ID})
	require.NoError(t, err)
	require.Empty(t, got)
}

// testAuditFollowConcurrent: a follower reading after the highest ID it has
// seen, while several appenders write at once, sees every event exactly
// once (IDs must become visible in ID order).
func testAuditFollowConcurrent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	const writers, each = 8, 40
	// The follower starts after a first event (AfterID 0 lists newest first).
	require.NoError(t, s.AppendAudit(ctx, []storage.AuditEvent{event(0, "system", "start")}))
	first, err := s.ListAudit(ctx, storage.AuditFilter{PageSize: 1})
	require.NoError(t, err)
	require.Len(t, first, 1)
	after := first[0].ID
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.AppendAudit(ctx, []storage.AuditEvent{event(w*each+i, "system", "issue")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[int64]bool{after: true}
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		got, err := s.ListAudit(ctx, storage.AuditFilter{AfterID: after, PageSize: storage.MaxPageSize})
		require.NoError(t, err)
		for _, e := range got {
			require.False(t, seen[e.ID], "event %d read twice", e.ID)
			require.Greater(t, e.ID, after, "oldest first")
			seen[e.ID], after = true, e.ID
		}
		if finished && len(got) == 0 {
			break
		}
	}
	all, err := s.ListAudit(ctx, storage.AuditFilter{PageSize: storage.MaxPageSize})
	require.NoError(t, err)
	require.Len(t, all, 1+writers*each)
	for _, e := range all {
		require.True(t, seen[e.ID], "the follower skipped event %d", e.ID)
	}
}

func testAgentReports(t *testing.T, s storage.Store) {
	ctx := t.Context()
	a := agent("node-1")
	require.NoError(t, s.UpsertAgent(ctx, a))
	require.NoError(t, s.ReportAgents(ctx, []storage.AgentReport{
		{SPIFFEID: a.SPIFFEID, LastSeen: base.Add(time.Minute), BundleSeqAck: 4, Workloads: 12},
		{SPIFFEID: agent("unknown").SPIFFEID, LastSeen: base, BundleSeqAck: 1}, // skipped
	}))
	got, err := s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	require.Equal(t, base.Add(time.Minute), got.LastSeen)
	require.EqualValues(t, 4, got.BundleSeqAck)
	require.EqualValues(t, 12, got.Workloads)
	_, err = s.GetAgent(ctx, agent("unknown").SPIFFEID)
	require.ErrorIs(t, err, storage.ErrNotFound)

	// An older report never moves LastSeen back.
	require.NoError(t, s.ReportAgents(ctx, []storage.AgentReport{{SPIFFEID: a.SPIFFEID, LastSeen: base, BundleSeqAck: 5, Workloads: 3}}))
	got, err = s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	require.Equal(t, base.Add(time.Minute), got.LastSeen)
	require.EqualValues(t, 5, got.BundleSeqAck)
	require.ErrorIs(t, s.ReportAgents(ctx, []storage.AgentReport{{}}), storage.ErrInvalidArgument)
}

func testEvictAgent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	a := agent("node-1")
	require.NoError(t, s.UpsertAgent(ctx, a))
	// Two agent SVIDs of node-1 (one expired at eviction), one of node-2,
	// one workload certificate.
	recs := certs(0, 4)
	for i := range 3 {
		recs[i].Kind, recs[i].SPIFFEID = "agent", a.SPIFFEID
	}
	recs[0].NotAfter = base.Add(-time.Second)
	recs[0].NotBefore = base.Add(-time.Hour)
	recs[2].SPIFFEID = agent("node-2").SPIFFEID
	require.NoError(t, s.RecordCertificates(ctx, recs))
	seq0, err := s.ControlSequence(ctx)
	require.NoError(t, err)

	at := base.Add(time.Second)
	revoked, err := s.EvictAgent(ctx, a.SPIFFEID, at)
	require.NoError(t, err)
	require.Equal(t, []string{recs[1].Serial}, revoked)
	got, err := s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	require.Equal(t, at, got.EvictedAt)
	c, err := s.GetCertificate(ctx, recs[1].Serial)
	require.NoError(t, err)
	require.Equal(t, at, c.RevokedAt)

	ctl, err := s.Controls(ctx, at)
	require.NoError(t, err)
	require.Greater(t, ctl.Sequence, seq0)
	require.Equal(t, []string{recs[1].Serial}, ctl.RevokedAgentSerials)
	ctl, err = s.Controls(ctx, recs[1].NotAfter.Add(time.Nanosecond))
	require.NoError(t, err)
	require.Empty(t, ctl.RevokedAgentSerials, "expired certificates drop out")

	// An upsert (the agent attesting again) keeps EvictedAt.
	later := a
	later.LastSeen = base.Add(time.Hour)
	require.NoError(t, s.UpsertAgent(ctx, later))
	got, err = s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	require.Equal(t, at, got.EvictedAt)

	_, err = s.EvictAgent(ctx, agent("absent").SPIFFEID, at)
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, err = s.EvictAgent(ctx, a.SPIFFEID, time.Time{})
	require.ErrorIs(t, err, storage.ErrInvalidArgument)
}

func testDenyList(t *testing.T, s storage.Store) {
	ctx := t.Context()
	web := storage.DeniedIdentity{SPIFFEID: "spiffe://cluster.local/ns/default/sa/web", CreatedAt: base, Actor: "uid:0", Reason: "compromised"}
	api := storage.DeniedIdentity{SPIFFEID: "spiffe://cluster.local/ns/default/sa/api", CreatedAt: base.Add(time.Second), Actor: "uid:0"}
	require.NoError(t, s.DenyIdentity(ctx, web))
	require.NoError(t, s.DenyIdentity(ctx, api))
	again := web
	again.Reason, again.CreatedAt = "other", base.Add(time.Hour)
	require.NoError(t, s.DenyIdentity(ctx, again), "denying twice is not an error")
	got, err := s.ListDeniedIdentities(ctx)
	require.NoError(t, err)
	require.Equal(t, []storage.DeniedIdentity{api, web}, got, "ordered, first entry kept")
	ctl, err := s.Controls(ctx, base)
	require.NoError(t, err)
	require.Equal(t, []string{api.SPIFFEID, web.SPIFFEID}, ctl.DeniedIdentities)

	require.NoError(t, s.AllowIdentity(ctx, web.SPIFFEID))
	require.ErrorIs(t, s.AllowIdentity(ctx, web.SPIFFEID), storage.ErrNotFound)
	got, err = s.ListDeniedIdentities(ctx)
	require.NoError(t, err)
	require.Equal(t, []storage.DeniedIdentity{api}, got)
	require.ErrorIs(t, s.DenyIdentity(ctx, storage.DeniedIdentity{}), storage.ErrInvalidArgument)
}

// testControlSequence checks that every control change moves the sequence
// and that Controls reflects bans.
func testControlSequence(t *testing.T, s storage.Store) {
	ctx := t.Context()
	a := agent("node-1")
	require.NoError(t, s.UpsertAgent(ctx, a))
	last, err := s.ControlSequence(ctx)
	require.NoError(t, err)
	advanced := func(what string) {
		t.Helper()
		seq, err := s.ControlSequence(ctx)
		require.NoError(t, err)
		require.Greater(t, seq, last, what)
		last = seq
	}
	require.NoError(t, s.SetAgentBanned(ctx, a.SPIFFEID, true))
	advanced("ban")
	ctl, err := s.Controls(ctx, base)
	require.NoError(t, err)
	require.Equal(t, []string{a.SPIFFEID}, ctl.BannedAgents)
	require.Equal(t, last, ctl.Sequence)
	require.NoError(t, s.SetAgentBanned(ctx, a.SPIFFEID, false))
	advanced("unban")
	_, err = s.EvictAgent(ctx, a.SPIFFEID, base)
	require.NoError(t, err)
	advanced("evict")
	require.NoError(t, s.DenyIdentity(ctx, storage.DeniedIdentity{SPIFFEID: "spiffe://cluster.local/ns/a/sa/b", CreatedAt: base}))
	advanced("deny")
	require.NoError(t, s.AllowIdentity(ctx, "spiffe://cluster.local/ns/a/sa/b"))
	advanced("allow")

	// A failed change does not move it.
	require.ErrorIs(t, s.SetAgentBanned(ctx, agent("absent").SPIFFEID, true), storage.ErrNotFound)
	seq, err := s.ControlSequence(ctx)
	require.NoError(t, err)
	require.Equal(t, last, seq)
	ctl, err = s.Controls(ctx, base)
	require.NoError(t, err)
	require.Empty(t, ctl.BannedAgents)
}

func testReplicas(t *testing.T, s storage.Store) {
	ctx := t.Context()
	b := storage.ReplicaRecord{Name: "ca-1", StartedAt: base, SeenAt: base.Add(time.Second), Health: "serving",
		IntermediateKeyID: "5e1f00aa", IntermediateNotAfter: base.Add(24 * time.Hour)}
	a := b
	a.Name, a.Health = "ca-0", "not ready: store"
	require.NoError(t, s.UpsertReplica(ctx, b))
	require.NoError(t, s.UpsertReplica(ctx, a))
	got, err := s.ListReplicas(ctx)
	require.NoError(t, err)
	require.Equal(t, []storage.ReplicaRecord{a, b}, got)

	b.SeenAt, b.IntermediateKeyID = base.Add(time.Minute), "77aa"
	require.NoError(t, s.UpsertReplica(ctx, b))
	got, err = s.ListReplicas(ctx)
	require.NoError(t, err)
	require.Equal(t, []storage.ReplicaRecord{a, b}, got)
	require.ErrorIs(t, s.UpsertReplica(ctx, storage.ReplicaRecord{}), storage.ErrInvalidArgument)
}
