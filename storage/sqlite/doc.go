// Package sqlite implements storage.Store on a SQLite file with the pure-Go
// driver modernc.org/sqlite (no cgo). It is the embedded default store of a
// single CA replica; use storage/postgres for several replicas.
//
// Durability comes first: the database runs in WAL mode with
// synchronous=FULL, so a transaction that committed (RecordCertificates
// returned nil) survives a crash or power loss. Writes share a single
// connection; put a storage.Writer in front of the store on the hot path so
// that concurrent certificates share one transaction and one fsync.
//
// The schema lives in numbered, embedded goose migrations applied at New
// and tracked in goose's goose_db_version table (versions recorded by the
// earlier hand-written migrator in schema_version are adopted once). New
// refuses a database whose schema is newer than the code (ErrSchemaTooNew),
// so an old binary never writes a schema it does not know.
//
// Times are stored as UTC Unix nanoseconds (INTEGER) and come back exactly.
// The database file is created with mode 0600 and its directory with 0700;
// SQLite gives the -wal and -shm files the database file's mode.
package sqlite
