package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/internal/migrate"
)

// Defaults of Config.
const (
	DefaultMaxConns         = 16
	DefaultStatementTimeout = 5 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
)

// Advisory lock keys (pg_advisory_lock's bigint space), one per job that
// only one replica may do at a time.
const (
	lockMigrate    int64 = 0x4c414e5900000001 // "LANY" | 1: schema migrations
	lockRetention  int64 = 0x4c414e5900000002 // pruning expired certificates
	lockSharedRoot int64 = 0x4c414e5900000003 // creating the shared root
	lockAudit      int64 = 0x4c414e5900000004 // appending audit events (IDs commit in order)
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Config configures a Store.
type Config struct {
	// DSN is a libpq connection string or URL ("postgres://user@host/db?
	// sslmode=verify-full&sslrootcert=/etc/lanyard/db-ca.pem"). What it
	// leaves out comes from the standard PG* environment variables
	// (PGHOST, PGUSER, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, ...) and
	// ~/.pgpass. May be empty when the environment says everything.
	DSN string
	// SSLMode and SSLRootCert, when set, override the DSN's sslmode and
	// sslrootcert (use "verify-full" with the database server's CA file).
	SSLMode     string
	SSLRootCert string
	// MaxConns bounds the pool. Default DefaultMaxConns.
	MaxConns int32
	// StatementTimeout bounds every statement on the server. Default
	// DefaultStatementTimeout.
	StatementTimeout time.Duration
	// ConnectTimeout bounds a new connection when the DSN does not
	// (connect_timeout). Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Replica names this process in the heartbeat table. Default: the
	// host name.
	Replica string
	// Logger receives operational messages. Default: discard.
	Logger *slog.Logger
	// Clock stamps audit events without a time and heartbeats. Default:
	// time.Now.
	Clock func() time.Time
}

// Store is a storage.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	log     *slog.Logger
	clock   func() time.Time
	replica string
	pool    *pgxpool.Pool

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ storage.Store = (*Store)(nil)

// New connects, migrates the schema under an advisory lock and returns the
// store. Errors reaching the database wrap storage.ErrUnavailable; a schema
// newer than the code is refused with storage.ErrSchemaTooNew.
func New(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := poolConfig(&cfg)
	if err != nil {
		return nil, err
	}
	version, err := migrateSchema(ctx, pc, cfg.Logger)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w: %w", storage.ErrUnavailable, err)
	}
	s := &Store{log: cfg.Logger, clock: cfg.Clock, replica: cfg.Replica, pool: pool}
	cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "postgres store opened",
		slog.String("host", pc.ConnConfig.Host), slog.String("database", pc.ConnConfig.Database),
		slog.Int64("schema_version", version), slog.Int("max_conns", int(pc.MaxConns)))
	return s, nil
}

// poolConfig fills cfg's defaults and parses the DSN (with the PG*
// environment) into a pool configuration.
func poolConfig(cfg *Config) (*pgxpool.Config, error) {
	if cfg.MaxConns < 0 || cfg.StatementTimeout < 0 || cfg.ConnectTimeout < 0 {
		return nil, fmt.Errorf("postgres store: negative pool size or timeout: %w", storage.ErrInvalidArgument)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.StatementTimeout == 0 {
		cfg.StatementTimeout = DefaultStatementTimeout
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Replica == "" {
		cfg.Replica, _ = os.Hostname()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	dsn := withParams(cfg.DSN, map[string]string{"sslmode": cfg.SSLMode, "sslrootcert": cfg.SSLRootCert})
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the DSN; it can hold a password.
		return nil, fmt.Errorf("postgres store: malformed DSN: %w", storage.ErrInvalidArgument)
	}
	pc.MaxConns = cfg.MaxConns
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	rp := pc.ConnConfig.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	// A commit returns only once its WAL is flushed (and replicated, when
	// the server has synchronous standbys): nothing leaves unrecorded.
	rp["synchronous_commit"] = "on"
	if rp["application_name"] == "" {
		rp["application_name"] = "lanyard"
	}
	pc.HealthCheckPeriod = 5 * time.Second
	return pc, nil
}

// migrateSchema applies the embedded migrations under a session advisory
// lock on a short-lived database/sql handle (goose speaks database/sql).
func migrateSchema(ctx context.Context, pc *pgxpool.Config, log *slog.Logger) (int64, error) {
	db := stdlib.OpenDB(*pc.ConnConfig.Copy())
	defer db.Close()
	db.SetMaxOpenConns(2) // the lock is held on one connection
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockMigrate), lock.WithLockTimeout(1, 300))
	if err != nil {
		return 0, fmt.Errorf("postgres store: %w", err)
	}
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return 0, fmt.Errorf("postgres store: embedded migrations: %w", err)
	}
	v, err := migrate.Up(ctx, migrate.Config{
		Dialect: goose.DialectPostgres, DB: db, Migrations: sub, Locker: locker, Logger: log,
	})
	if err != nil {
		return 0, fmt.Errorf("postgres store: %w", err)
	}
	return v, nil
}

// Ping commits this replica's heartbeat row, so it fails when the database
// cannot commit (down, read-only standby, disk full).
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO heartbeat (replica, time) VALUES ($1, $2)
		ON CONFLICT (replica) DO UPDATE SET time = excluded.time`, s.replica, s.clock().UnixNano())
	return s.classify(ctx, op, err)
}

// Close closes the pool. Later calls return nil; later use of the store
// returns an error wrapping storage.ErrClosed and storage.ErrUnavailable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

// checkOpen fails fast on a closed store or an ended context.
func (s *Store) checkOpen(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres %s: %w", op, errClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	return nil
}

// withParams sets the non-empty params in dsn, a URL or a keyword/value
// string.
func withParams(dsn string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k, v := range params {
		if v != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return dsn
	}
	slices.Sort(keys)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			for _, k := range keys {
				q.Set(k, params[k])
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
		return dsn // ParseConfig reports it
	}
	var b strings.Builder
	b.WriteString(dsn)
	for _, k := range keys {
		v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(params[k])
		fmt.Fprintf(&b, " %s='%s'", k, v)
	}
	return strings.TrimSpace(b.String())
}
