package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// LoadOrCreateRoot returns the shared root of td: its certificate (DER)
// and its sealed key. When there is none, create makes one and it is
// stored, all under a transaction advisory lock, so replicas starting
// together create exactly one root. The store never sees the key unsealed.
func (s *Store) LoadOrCreateRoot(ctx context.Context, td string,
	create func() (certDER, sealedKey []byte, err error),
) (certDER, sealedKey []byte, err error) {
	const op = "load or create shared root"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, nil, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockSharedRoot); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT cert, sealed_key FROM shared_roots WHERE trust_domain = $1`, td).
			Scan(&certDER, &sealedKey)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if certDER, sealedKey, err = create(); err != nil {
			return errCreate{err}
		}
		_, err = tx.Exec(ctx, `INSERT INTO shared_roots (trust_domain, cert, sealed_key, created_at)
			VALUES ($1, $2, $3, $4)`, td, certDER, sealedKey, s.clock().UnixNano())
		return err
	})
	var ce errCreate
	if errors.As(err, &ce) {
		return nil, nil, ce.err
	}
	if err != nil {
		return nil, nil, s.classify(ctx, op, err)
	}
	return certDER, sealedKey, nil
}

// errCreate carries create's error through the transaction unclassified.
type errCreate struct{ err error }

func (e errCreate) Error() string { return e.err.Error() }
func (e errCreate) Unwrap() error { return e.err }
