package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

var t0 = time.Date(2031, time.March, 14, 15, 9, 26, 535897932, time.UTC)

func rec(serial string) storage.CertificateRecord {
	return storage.CertificateRecord{
		Serial: serial, SPIFFEID: "spiffe://cluster.local/ns/default/sa/web", Kind: "workload",
		NotBefore: t0, NotAfter: t0.Add(time.Hour), IssuedAt: t0, SHA256: []byte{1, 2, 3},
	}
}

func TestReopenKeepsRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lanyard.db")
	s, err := sqlite.New(t.Context(), sqlite.Config{Path: path})
	require.NoError(t, err)
	require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1"), rec("a2")}))
	require.NoError(t, s.AppendAudit(t.Context(), []storage.AuditEvent{{Time: t0, Actor: "system", Action: "issue"}}))
	require.NoError(t, s.Close())

	s = newStore(t, path)
	got, err := s.GetCertificate(t.Context(), "a2")
	require.NoError(t, err)
	require.Equal(t, rec("a2"), got)
	n, err := s.CountCertificates(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	events, err := s.ListAudit(t.Context(), storage.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, events, 1)
}

// rawDB opens path without the store, for tests that tamper with the file.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestSchemaVersion(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tamper  string
		wantErr error
	}{
		{"current schema opens again", "", nil},
		{"newer schema refused", "INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, 1)", storage.ErrSchemaTooNew},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lanyard.db")
			s, err := sqlite.New(t.Context(), sqlite.Config{Path: path})
			require.NoError(t, err)
			require.NoError(t, s.Close())
			if tt.tamper != "" {
				db := rawDB(t, path)
				_, err := db.Exec(tt.tamper)
				require.NoError(t, err)
				require.NoError(t, db.Close())
			}
			s, err = sqlite.New(t.Context(), sqlite.Config{Path: path})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, s)
				return
			}
			require.NoError(t, err)
			require.NoError(t, s.Close())
			var versions int
			require.NoError(t, rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0`).Scan(&versions))
			files, err := filepath.Glob("migrations/*.sql")
			require.NoError(t, err)
			require.Equal(t, len(files), versions, "one row per migration: none runs twice")
		})
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "lanyard")
	path := filepath.Join(dir, "lanyard.db")
	s := newStore(t, path)
	require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")}))

	for _, tt := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
	} {
		fi, err := os.Stat(tt.path)
		require.NoError(t, err)
		require.Equal(t, tt.want, fi.Mode(), tt.path)
	}
}

func TestPragmas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lanyard.db")
	newStore(t, path)
	var mode string
	require.NoError(t, rawDB(t, path).QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	require.Equal(t, "wal", mode, "WAL is a property of the file")
}

func TestUnavailable(t *testing.T) {
	t.Run("locked database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "lanyard.db")
		s, err := sqlite.New(t.Context(), sqlite.Config{Path: path, BusyTimeout: 20 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })

		// Another process (here: connection) holds the write lock.
		db := rawDB(t, path)
		conn, err := db.Conn(t.Context())
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(t.Context(), "BEGIN IMMEDIATE")
		require.NoError(t, err)

		err = s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")})
		require.ErrorIs(t, err, storage.ErrUnavailable)
		require.ErrorIs(t, s.Ping(t.Context()), storage.ErrUnavailable, "Ping must notice it cannot write")
		_, err = s.CountCertificates(t.Context())
		require.NoError(t, err, "WAL readers are not blocked by a writer")

		_, err = conn.ExecContext(context.Background(), "ROLLBACK")
		require.NoError(t, err)
		require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")}))
		require.NoError(t, s.Ping(t.Context()))
	})
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "lanyard.db")
		require.NoError(t, os.WriteFile(path, []byte("this is not a sqlite database, just some text padding"), 0o600))
		_, err := sqlite.New(t.Context(), sqlite.Config{Path: path})
		require.ErrorIs(t, err, storage.ErrUnavailable)
	})
	t.Run("empty path", func(t *testing.T) {
		_, err := sqlite.New(t.Context(), sqlite.Config{})
		require.ErrorIs(t, err, storage.ErrInvalidArgument)
	})
}

// TestAdoptsLegacySchemaVersion opens a database made by the hand-written
// migrator of earlier releases: its schema is kept, not migrated again.
func TestAdoptsLegacySchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lanyard.db")
	schema, err := os.ReadFile("migrations/00001_initial.sql")
	require.NoError(t, err)
	db := rawDB(t, path)
	_, err = db.Exec(string(schema))
	require.NoError(t, err)
	_, err = db.Exec(`CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL);
		INSERT INTO schema_version VALUES (1, 0);
		INSERT INTO certificates (serial, spiffe_id, not_before, not_after, issued_at) VALUES ('a0', 'spiffe://x/y', 1, 2, 1)`)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s := newStore(t, path)
	n, err := s.CountCertificates(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	var applied int
	require.NoError(t, rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM goose_db_version WHERE version_id = 1`).Scan(&applied))
	require.Equal(t, 1, applied)
}
