package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

func event(i int, actor, action string) storage.AuditEvent {
	return storage.AuditEvent{
		Time:    base.Add(time.Duration(i) * time.Second),
		Actor:   actor,
		Action:  action,
		Subject: fmt.Sprintf("spiffe://cluster.local/ns/default/sa/sa-%d", i),
		Outcome: "ok",
		Detail:  fmt.Sprintf("event %d", i),
	}
}

func testAuditAppendList(t *testing.T, s storage.Store) {
	ctx := t.Context()
	got, err := s.ListAudit(ctx, storage.AuditFilter{})
	require.NoError(t, err)
	require.Empty(t, got)

	in := []storage.AuditEvent{event(0, "system", "issue"), event(1, "admin:uid=0", "ban-agent")}
	require.NoError(t, s.AppendAudit(ctx, in))
	require.NoError(t, s.AppendAudit(ctx, []storage.AuditEvent{{Actor: "system", Action: "no-time"}}))
	require.NoError(t, s.AppendAudit(ctx, nil))

	got, err = s.ListAudit(ctx, storage.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, "no-time", got[0].Action)
	require.False(t, got[0].Time.IsZero(), "zero time must be set by the store")
	require.Greater(t, got[0].ID, got[1].ID)
	require.Greater(t, got[1].ID, got[2].ID)
	require.Positive(t, got[2].ID)
	for i, want := range []storage.AuditEvent{in[1], in[0]} {
		want.ID = got[i+1].ID
		require.Equal(t, want, got[i+1])
	}
}

func testAuditFilters(t *testing.T, s storage.Store) {
	ctx := t.Context()
	require.NoError(t, s.AppendAudit(ctx, []storage.AuditEvent{
		event(0, "system", "issue"),
		event(1, "admin", "ban-agent"),
		event(2, "system", "reject"),
		event(3, "admin", "issue"),
		event(4, "system", "issue"),
	}))
	details := func(evs []storage.AuditEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Detail)
		}
		return out
	}
	for _, tt := range []struct {
		name   string
		filter storage.AuditFilter
		want   []string
	}{
		{"all", storage.AuditFilter{}, []string{"event 4", "event 3", "event 2", "event 1", "event 0"}},
		{"actor", storage.AuditFilter{Actor: "admin"}, []string{"event 3", "event 1"}},
		{"action", storage.AuditFilter{Action: "issue"}, []string{"event 4", "event 3", "event 0"}},
		{"actor and action", storage.AuditFilter{Actor: "system", Action: "issue"}, []string{"event 4", "event 0"}},
		{"since inclusive", storage.AuditFilter{Since: base.Add(3 * time.Second)}, []string{"event 4", "event 3"}},
		{"page size", storage.AuditFilter{PageSize: 2}, []string{"event 4", "event 3"}},
		{"no match", storage.AuditFilter{Actor: "nobody"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListAudit(ctx, tt.filter)
			require.NoError(t, err)
			require.Equal(t, tt.want, details(got))
		})
	}
}

func testAuditPaging(t *testing.T, s storage.Store) {
	ctx := t.Context()
	var in []storage.AuditEvent
	for i := range 250 {
		in = append(in, event(i, "system", "issue"))
	}
	require.NoError(t, s.AppendAudit(ctx, in[:100]))
	require.NoError(t, s.AppendAudit(ctx, in[100:]))

	seen := map[int64]bool{}
	f, pages := storage.AuditFilter{}, 0
	var lastID int64
	for {
		got, err := s.ListAudit(ctx, f)
		require.NoError(t, err)
		if len(got) == 0 {
			break
		}
		pages++
		require.LessOrEqual(t, len(got), storage.DefaultPageSize)
		for _, e := range got {
			require.False(t, seen[e.ID], "event %d listed twice", e.ID)
			seen[e.ID] = true
			if lastID != 0 {
				require.Less(t, e.ID, lastID)
			}
			lastID = e.ID
		}
		f.BeforeID = lastID
	}
	require.Len(t, seen, 250)
	require.Equal(t, 3, pages)
}
