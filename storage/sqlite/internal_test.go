package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConnectionPragmas(t *testing.T) {
	s, err := New(t.Context(), Config{Path: filepath.Join(t.TempDir(), "l.db"), BusyTimeout: 1234 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	for _, tt := range []struct {
		pool, pragma string
		want         int
	}{
		{"write", "synchronous", 2}, // FULL
		{"write", "foreign_keys", 1},
		{"write", "busy_timeout", 1234},
		{"write", "query_only", 0},
		{"read", "busy_timeout", 1234},
		{"read", "query_only", 1},
	} {
		db := s.write
		if tt.pool == "read" {
			db = s.read
		}
		var got int
		require.NoError(t, db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got))
		require.Equal(t, tt.want, got, "%s %s", tt.pool, tt.pragma)
	}
}

// TestListUsesIndexes guards the listing queries against full scans and
// sorts: each filter has an index ending in the listing order.
func TestListUsesIndexes(t *testing.T) {
	s, err := New(t.Context(), Config{Path: filepath.Join(t.TempDir(), "l.db")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	const cols = `SELECT serial FROM certificates `
	const order = ` ORDER BY issued_at DESC, serial DESC LIMIT 101`
	for _, tt := range []struct{ where, index string }{
		{"", "certificates_issued_at"},
		{"WHERE (issued_at, serial) < (1, 'a')", "certificates_issued_at"},
		{"WHERE spiffe_id = 'x'", "certificates_spiffe_id"},
		{"WHERE namespace = 'x' AND (issued_at, serial) < (1, 'a')", "certificates_namespace"},
		{"WHERE node_name = 'x'", "certificates_node_name"},
	} {
		rows, err := s.read.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+cols+tt.where+order)
		require.NoError(t, err)
		var plan []string
		for rows.Next() {
			var id, parent, notUsed int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &notUsed, &detail))
			plan = append(plan, detail)
		}
		require.NoError(t, rows.Err())
		p := strings.Join(plan, "; ")
		require.Contains(t, p, tt.index, tt.where)
		require.NotContains(t, p, "TEMP B-TREE", tt.where)
	}
}
