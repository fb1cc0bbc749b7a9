package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/lanyard-id/lanyard/storage"
)

// Table is the name of goose's version table in both stores.
const Table = "goose_db_version"

// Config says what to migrate.
type Config struct {
	// Dialect is goose.DialectSQLite3 or goose.DialectPostgres.
	Dialect goose.Dialect
	// DB is the database to migrate; it must allow two connections when
	// Locker is set (the lock is held on one of them).
	DB *sql.DB
	// Migrations holds the NNNNN_description.sql files at its root,
	// goose-annotated. A released migration is never edited.
	Migrations fs.FS
	// Locker, when set, serialises migrations of processes starting
	// together (PostgreSQL: a session advisory lock).
	Locker lock.SessionLocker
	Logger *slog.Logger
}

// Up migrates cfg.DB to the newest embedded version and returns it. A
// database whose version is newer than every embedded migration is refused
// with storage.ErrSchemaTooNew before anything is applied.
func Up(ctx context.Context, cfg Config) (int64, error) {
	opts := []goose.ProviderOption{goose.WithTableName(Table), goose.WithDisableGlobalRegistry(true)}
	if cfg.Locker != nil {
		opts = append(opts, goose.WithSessionLocker(cfg.Locker))
	}
	p, err := goose.NewProvider(cfg.Dialect, cfg.DB, cfg.Migrations, opts...)
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	latest := Latest(p)
	if err := checkVersion(ctx, p, latest); err != nil {
		return 0, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate schema: %w: %w", storage.ErrUnavailable, err)
	}
	for _, r := range results {
		cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "schema migrated",
			slog.Int64("version", r.Source.Version), slog.Duration("took", r.Duration))
	}
	// Another process may have migrated further while we waited for the lock.
	if err := checkVersion(ctx, p, latest); err != nil {
		return 0, err
	}
	return latest, nil
}

// Latest is the newest version among p's migrations.
func Latest(p *goose.Provider) int64 {
	var v int64
	for _, s := range p.ListSources() {
		v = max(v, s.Version)
	}
	return v
}

func checkVersion(ctx context.Context, p *goose.Provider, latest int64) error {
	// GetDBVersion creates the version table (version 0) of a new database.
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w: %w", storage.ErrUnavailable, err)
	}
	if current > latest {
		return fmt.Errorf("database schema version %d, this binary knows up to %d: %w",
			current, latest, storage.ErrSchemaTooNew)
	}
	return nil
}
