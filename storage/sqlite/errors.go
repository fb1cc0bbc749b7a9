package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/lanyard-id/lanyard/storage"
)

// ErrSchemaTooNew reports a database migrated by a newer Lanyard: this code
// does not know its schema and refuses to touch it. It is
// storage.ErrSchemaTooNew.
var ErrSchemaTooNew = storage.ErrSchemaTooNew

// errClosed is returned by every method after Close.
var errClosed = fmt.Errorf("%w: %w", storage.ErrClosed, storage.ErrUnavailable)

// classify wraps err from operation op with the storage sentinel callers
// branch on:
//
//   - the context's error when ctx ended (the driver reports an interrupt);
//   - ErrNotFound for sql.ErrNoRows;
//   - ErrConflict for a PRIMARY KEY or UNIQUE violation;
//   - ErrClosed and ErrUnavailable after Close;
//   - ErrUnavailable for a locked, busy, unreadable, full, read-only or
//     corrupt database and for a broken connection.
//
// Anything else (a bug such as malformed SQL) is wrapped as is.
func (s *Store) classify(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("sqlite %s: %w", op, ctxErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("sqlite %s: %w: %v", op, errClosed, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite %s: %w", op, storage.ErrNotFound)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("sqlite %s: %w: %v", op, storage.ErrConflict, err)
		}
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
			sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_NOMEM,
			sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_PERM,
			sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_ABORT, sqlite3.SQLITE_AUTH:
			return fmt.Errorf("sqlite %s: %w: %v", op, storage.ErrUnavailable, err)
		}
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, sql.ErrTxDone) || errors.Is(err, driver.ErrBadConn) {
		return fmt.Errorf("sqlite %s: %w: %v", op, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("sqlite %s: %w", op, err)
}
