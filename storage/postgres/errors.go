package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lanyard-id/lanyard/storage"
)

// errClosed is returned by every method after Close.
var errClosed = fmt.Errorf("%w: %w", storage.ErrClosed, storage.ErrUnavailable)

// classify wraps err from operation op with the storage sentinel callers
// branch on:
//
//   - the context's error when ctx ended;
//   - ErrNotFound for pgx.ErrNoRows;
//   - ErrConflict for a unique violation (23505);
//   - ErrInvalidArgument for data the server refuses (class 22);
//   - ErrUnavailable for connection failures and every error that is not
//     the server's answer to the statement, and for the server's transient
//     refusals: connection exceptions (08), resources (53), operator
//     intervention (57: shutdown, statement timeout), read-only
//     transactions on a standby (25006), serialization failures and
//     deadlocks (40), system errors (58);
//   - ErrClosed and ErrUnavailable after Close.
//
// Anything else (a bug such as malformed SQL) is wrapped as is.
func (s *Store) classify(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("postgres %s: %w", op, ctxErr)
	}
	if s.closed.Load() {
		return fmt.Errorf("postgres %s: %w: %v", op, errClosed, err)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres %s: %w", op, storage.ErrNotFound)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("postgres %s: %w: %w", op, storage.ErrUnavailable, err)
		}
		// Not an answer from the server: the connection failed.
		return fmt.Errorf("postgres %s: %w: %v", op, storage.ErrUnavailable, err)
	}
	switch {
	case pe.Code == "23505":
		return fmt.Errorf("postgres %s: %w: %v", op, storage.ErrConflict, err)
	case strings.HasPrefix(pe.Code, "22"):
		return fmt.Errorf("postgres %s: %w: %v", op, storage.ErrInvalidArgument, err)
	case pe.Code == "25006", strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"),
		strings.HasPrefix(pe.Code, "57"), strings.HasPrefix(pe.Code, "40"), strings.HasPrefix(pe.Code, "58"):
		return fmt.Errorf("postgres %s: %w: %v", op, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres %s: %w", op, err)
}
