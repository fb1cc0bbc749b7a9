// Package postgres implements storage.Store on PostgreSQL with pgx/v5
// (pgxpool), for several CA replicas sharing one database.
//
// Durability: every commit waits for the WAL flush (the session sets
// synchronous_commit=on), so a certificate whose RecordCertificates
// returned nil survives a crash of the replica or of the database. A batch
// of certificates is one COPY, one transaction; put a storage.Writer in
// front of the store so concurrent certificates share it.
//
// Schema: embedded goose migrations (migrations/), applied by New while it
// holds a session advisory lock, so replicas starting together take turns;
// New refuses a schema newer than the code (storage.ErrSchemaTooNew).
// goose speaks database/sql, so the migration alone runs on a short-lived
// handle over pgx's stdlib driver; everything else uses the pool.
//
// Beyond storage.Store the package keeps what replicas share: the trust
// bundle (Bundles, with LISTEN/NOTIFY and a periodic re-read), the shared
// self-signed root (SharedRoot, sealed with a key from a file), retention
// (PruneExpired, under a transaction advisory lock so one replica prunes
// at a time).
//
// Errors map to the storage sentinels: unique violation → ErrConflict;
// connection failures, admin shutdown, read-only (standby), statement
// timeout, serialization failures and resource exhaustion →
// ErrUnavailable; bad input → ErrInvalidArgument. The pool reconnects by
// itself when the database comes back.
package postgres
