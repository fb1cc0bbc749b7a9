package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/storage"
)

// PruneCertificates deletes at most limit records whose NotAfter is before
// before (storage.Pruner), oldest expiry first. The transaction first tries
// the retention advisory lock: while another replica prunes, it deletes
// nothing and returns 0. Deleted rows are skipped by concurrent inserts, so
// issuance never waits for it.
func (s *Store) PruneCertificates(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "prune certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 || !storage.ValidTime(before) {
		return 0, fmt.Errorf("postgres %s: bad limit or time: %w", op, storage.ErrInvalidArgument)
	}
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockRetention).Scan(&locked); err != nil || !locked {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM certificates WHERE serial IN (
			SELECT serial FROM certificates WHERE not_after < $1 ORDER BY not_after LIMIT $2
			FOR UPDATE SKIP LOCKED)`, before.UnixNano(), limit)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return n, nil
}
