package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/internal/migrate"
)

// migrationFiles holds the schema, one goose-annotated file per version,
// named NNNNN_description.sql. A released migration is never edited;
// change the schema with a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

func migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(fmt.Sprintf("embedded migrations: %v", err)) // a build defect every test catches
	}
	return sub
}

// migrateFile brings the database at path to the newest schema on a
// connection of its own (goose wants a pool it may use freely), or refuses
// a newer schema with storage.ErrSchemaTooNew. Each migration runs in one
// IMMEDIATE transaction, so two processes opening a new file together
// take turns.
func migrateFile(ctx context.Context, path string, busy time.Duration, log *slog.Logger) (int64, error) {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", dsn(path, q))
	if err != nil {
		return 0, fmt.Errorf("sqlite migrate: %w: %w", storage.ErrUnavailable, err)
	}
	defer db.Close()
	if err := adoptLegacyVersions(ctx, db); err != nil {
		return 0, fmt.Errorf("sqlite migrate: %w: %w", storage.ErrUnavailable, err)
	}
	v, err := migrate.Up(ctx, migrate.Config{
		Dialect: goose.DialectSQLite3, DB: db, Migrations: migrations(), Logger: log,
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite migrate: %w", err)
	}
	return v, nil
}

// adoptLegacyVersions carries the versions recorded by the hand-written
// migrator of earlier releases (table schema_version) over to goose's
// table, once, so a database they made is not migrated twice.
func adoptLegacyVersions(ctx context.Context, db *sql.DB) error {
	var legacy, adopted bool
	if err := db.QueryRowContext(ctx, `SELECT
		EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'),
		EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)`,
		migrate.Table).Scan(&legacy, &adopted); err != nil {
		return fmt.Errorf("look for schema_version: %w", err)
	}
	if !legacy || adopted {
		return nil // a new database, or adopted already
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE `+migrate.Table+` (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		version_id INTEGER NOT NULL,
		is_applied INTEGER NOT NULL,
		tstamp TIMESTAMP DEFAULT (datetime('now')))`); err != nil {
		return fmt.Errorf("create %s: %w", migrate.Table, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+migrate.Table+` (version_id, is_applied) VALUES (0, 1)`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+migrate.Table+` (version_id, is_applied)
		SELECT version, 1 FROM schema_version ORDER BY version`); err != nil {
		return fmt.Errorf("copy schema_version: %w", err)
	}
	return tx.Commit()
}
