package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

func agent(node string) storage.AgentRecord {
	return storage.AgentRecord{
		SPIFFEID:     "spiffe://cluster.local/lanyard/agent/kind/" + node,
		Cluster:      "kind",
		NodeName:     node,
		Serial:       "a1",
		FirstSeen:    base,
		LastSeen:     base,
		NotAfter:     base.Add(time.Hour),
		BundleSeqAck: 1,
	}
}

func testAgentUpsert(t *testing.T, s storage.Store) {
	ctx := t.Context()
	a := agent("node-1")
	require.NoError(t, s.UpsertAgent(ctx, a))
	got, err := s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	require.Equal(t, a, got)

	require.NoError(t, s.SetAgentBanned(ctx, a.SPIFFEID, true))

	later := a
	later.Serial = "a2"
	later.FirstSeen = base.Add(time.Hour) // must be ignored
	later.LastSeen = base.Add(time.Hour)
	later.NotAfter = base.Add(2 * time.Hour)
	later.Banned = false // must be ignored
	later.BundleSeqAck = 7
	require.NoError(t, s.UpsertAgent(ctx, later))

	got, err = s.GetAgent(ctx, a.SPIFFEID)
	require.NoError(t, err)
	want := later
	want.FirstSeen = a.FirstSeen
	want.Banned = true
	require.Equal(t, want, got)

	t.Run("new agent may start banned", func(t *testing.T) {
		b := agent("node-2")
		b.Banned = true
		require.NoError(t, s.UpsertAgent(ctx, b))
		got, err := s.GetAgent(ctx, b.SPIFFEID)
		require.NoError(t, err)
		require.True(t, got.Banned)
	})
	t.Run("empty SPIFFE ID", func(t *testing.T) {
		require.ErrorIs(t, s.UpsertAgent(ctx, storage.AgentRecord{}), storage.ErrInvalidArgument)
	})
}

func testAgentBan(t *testing.T, s storage.Store) {
	ctx := t.Context()
	a := agent("node-1")
	require.NoError(t, s.UpsertAgent(ctx, a))
	for _, tt := range []struct {
		name   string
		banned bool
	}{
		{"ban", true},
		{"ban again", true},
		{"unban", false},
		{"unban again", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, s.SetAgentBanned(ctx, a.SPIFFEID, tt.banned))
			got, err := s.GetAgent(ctx, a.SPIFFEID)
			require.NoError(t, err)
			require.Equal(t, tt.banned, got.Banned)
			require.Equal(t, a.LastSeen, got.LastSeen, "ban must not touch other fields")
		})
	}
}

func testAgentNotFound(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.GetAgent(ctx, "spiffe://cluster.local/lanyard/agent/kind/nope")
	require.ErrorIs(t, err, storage.ErrNotFound)
	err = s.SetAgentBanned(ctx, "spiffe://cluster.local/lanyard/agent/kind/nope", true)
	require.ErrorIs(t, err, storage.ErrNotFound)
}

func testListAgents(t *testing.T, s storage.Store) {
	ctx := t.Context()
	got, err := s.ListAgents(ctx)
	require.NoError(t, err)
	require.Empty(t, got)
	for _, n := range []string{"node-c", "node-a", "node-b"} {
		require.NoError(t, s.UpsertAgent(ctx, agent(n)))
	}
	got, err = s.ListAgents(ctx)
	require.NoError(t, err)
	require.Equal(t, []storage.AgentRecord{agent("node-a"), agent("node-b"), agent("node-c")}, got)
}
