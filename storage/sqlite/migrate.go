package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// migrationFiles holds the schema, one file per version, named
// NNNN_description.sql and numbered from 0001 without gaps. A released
// migration is never edited; change the schema with a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order. It panics
// on a malformed set: that is a build defect caught by every test.
func migrations() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(fmt.Sprintf("read embedded migrations: %v", err))
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			panic(fmt.Sprintf("migration %q: want NNNN_description.sql", e.Name()))
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			panic(fmt.Sprintf("read migration %q: %v", e.Name(), err))
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			panic(fmt.Sprintf("migration %q: want version %d", m.name, i+1))
		}
	}
	return ms
}

// latestVersion is the schema version this code writes.
func latestVersion() int { return len(migrations()) }

const createSchemaVersion = `CREATE TABLE IF NOT EXISTS schema_version (
	version    INTEGER NOT NULL PRIMARY KEY,
	applied_at INTEGER NOT NULL
)`

// migrate brings db to latestVersion in one IMMEDIATE transaction (so two
// processes opening a new file do not both migrate it), or refuses a newer
// schema with ErrSchemaTooNew.
func migrate(ctx context.Context, db *sql.DB, clock func() time.Time, log *slog.Logger) (err error) {
	fail := func(op string, err error) error {
		return fmt.Errorf("sqlite migrate: %s: %w: %v", op, storage.ErrUnavailable, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fail("begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, createSchemaVersion); err != nil {
		return fail("create schema_version", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return fail("read schema_version", err)
	}
	ms := migrations()
	if current > len(ms) {
		return fmt.Errorf("sqlite migrate: database at version %d, this binary knows %d: %w",
			current, len(ms), ErrSchemaTooNew)
	}
	for _, m := range ms[current:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fail(m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
			m.version, clock().UnixNano()); err != nil {
			return fail(m.name, err)
		}
		log.LogAttrs(ctx, slog.LevelInfo, "sqlite schema migrated",
			slog.Int("version", m.version), slog.String("migration", m.name))
	}
	if err := tx.Commit(); err != nil {
		return fail("commit", err)
	}
	return nil
}
