package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	// The pure-Go SQLite driver, registered as "sqlite".
	_ "modernc.org/sqlite"

	"github.com/lanyard-id/lanyard/storage"
)

// DefaultBusyTimeout is how long a statement waits for a lock held by
// another connection or process before it fails with ErrUnavailable.
const DefaultBusyTimeout = 5 * time.Second

// Config configures a Store.
type Config struct {
	// Path is the database file. It is created with mode 0600, and its
	// directory with mode 0700, when missing. Required.
	Path string
	// Logger receives operational messages. Default: discard.
	Logger *slog.Logger
	// Clock stamps audit events without a time and heartbeats.
	// Default: time.Now.
	Clock func() time.Time
	// BusyTimeout bounds the wait for a database lock. Default:
	// DefaultBusyTimeout.
	BusyTimeout time.Duration
	// MaxReadConns bounds the read pool. Default: max(4, GOMAXPROCS).
	MaxReadConns int
}

// Store is a storage.Store on a SQLite file. It is safe for concurrent use.
//
// Writes go through a single connection (SQLite allows one writer at a
// time; queuing in database/sql is cheaper than SQLITE_BUSY retries), reads
// through a separate pool of query-only connections that WAL lets run
// beside the writer.
type Store struct {
	log   *slog.Logger
	clock func() time.Time
	path  string

	write *sql.DB
	read  *sql.DB

	insertCert *sql.Stmt // prepared on write, used in RecordCertificates

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// New opens (creating when missing) the database at cfg.Path and migrates
// its schema to the newest version this code knows (goose, one transaction
// per migration). It refuses, with ErrSchemaTooNew, a database written by
// newer code. Errors
// opening or migrating the file wrap storage.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("sqlite store: empty path: %w", storage.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = DefaultBusyTimeout
	}
	if cfg.MaxReadConns <= 0 {
		cfg.MaxReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: resolve path: %w", err)
	}
	if err := createFile(path, cfg.Logger); err != nil {
		return nil, fmt.Errorf("sqlite store: %w: %w", storage.ErrUnavailable, err)
	}

	version, err := migrateFile(ctx, path, cfg.BusyTimeout, cfg.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{log: cfg.Logger, clock: cfg.Clock, path: path}
	if err := s.open(ctx, cfg); err != nil {
		s.closeDBs()
		return nil, err
	}
	cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "sqlite store opened",
		slog.String("path", path), slog.Int64("schema_version", version))
	return s, nil
}

func (s *Store) open(ctx context.Context, cfg Config) error {
	busy := strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)
	w := url.Values{}
	w.Set("_busy_timeout", busy)
	w.Set("_journal_mode", "WAL")
	// FULL: in WAL mode every commit fsyncs the WAL, so a recorded
	// certificate survives power loss, not only a process crash.
	w.Set("_synchronous", "FULL")
	w.Set("_foreign_keys", "1")
	// Transactions take the write lock at BEGIN, so a busy database fails
	// (or waits) up front instead of at the first write.
	w.Set("_txlock", "immediate")
	var err error
	if s.write, err = sql.Open("sqlite", dsn(s.path, w)); err != nil {
		return fmt.Errorf("sqlite store: open: %w: %w", storage.ErrUnavailable, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0)
	s.write.SetConnMaxIdleTime(0)

	if err := s.write.PingContext(ctx); err != nil {
		return s.classify(ctx, "open", err)
	}

	r := url.Values{}
	r.Set("_busy_timeout", busy)
	r.Set("_foreign_keys", "1")
	r.Set("_query_only", "1")
	if s.read, err = sql.Open("sqlite", dsn(s.path, r)); err != nil {
		return fmt.Errorf("sqlite store: open: %w: %w", storage.ErrUnavailable, err)
	}
	s.read.SetMaxOpenConns(cfg.MaxReadConns)
	s.read.SetMaxIdleConns(cfg.MaxReadConns)
	if err := s.read.PingContext(ctx); err != nil {
		return s.classify(ctx, "open", err)
	}

	if s.insertCert, err = s.write.PrepareContext(ctx, insertCertificateSQL); err != nil {
		return s.classify(ctx, "prepare", err)
	}
	return nil
}

// dsn builds a file: URI for path with the driver parameters q.
func dsn(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	// An absolute path yields "file:///abs/path", which SQLite accepts.
	return u.String()
}

// createFile makes path's directory (0700) and an empty database file
// (0600) when they are missing, so SQLite never creates them with its own,
// wider, default mode; its -wal and -shm files copy the database's mode.
func createFile(path string, log *slog.Logger) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("stat database: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			log.Warn("sqlite database file is accessible to group or others",
				slog.String("path", path), slog.String("mode", fi.Mode().Perm().String()))
		}
		return nil
	case err != nil:
		return fmt.Errorf("create database: %w", err)
	}
	if err := f.Chmod(0o600); err != nil { // regardless of umask
		_ = f.Close()
		return fmt.Errorf("chmod database: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	// Make the new directory entry durable before anything is recorded.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// Ping commits a write to the heartbeat row and runs a read, so it fails
// when the store cannot commit (locked, read-only, disk full, I/O error).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.checkOpen(ctx, "ping"); err != nil {
		return err
	}
	_, err := s.write.ExecContext(ctx,
		`INSERT INTO heartbeat (id, time) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET time = excluded.time`,
		s.clock().UnixNano())
	if err != nil {
		return s.classify(ctx, "ping", err)
	}
	var one int
	if err := s.read.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return s.classify(ctx, "ping", err)
	}
	return nil
}

// Close closes both pools. Later calls return nil; later use of the store
// returns an error wrapping storage.ErrClosed and storage.ErrUnavailable.
func (s *Store) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.closed.Store(true)
		s.closeErr = s.closeDBs()
	})
	if !first {
		return nil
	}
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.insertCert != nil {
		errs = append(errs, s.insertCert.Close())
	}
	// Readers first: the last connection to close checkpoints the WAL.
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// checkOpen fails fast on a closed store or an ended context.
func (s *Store) checkOpen(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlite %s: %w", op, errClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	return nil
}
