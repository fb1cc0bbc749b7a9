package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// controlTx runs fn in a write transaction and advances the control
// sequence in it. An error fn returns that already wraps a storage
// sentinel is returned as is; any other is classified.
func (s *Store) controlTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) (err error) {
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidArgument) {
			return err
		}
		return s.classify(ctx, op, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE control_sequence SET seq = seq + 1 WHERE id = 1`); err != nil {
		return s.classify(ctx, op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.classify(ctx, op, err)
	}
	return nil
}

// ReportAgents updates what the agents reported, in one transaction.
func (s *Store) ReportAgents(ctx context.Context, reports []storage.AgentReport) (err error) {
	const op = "report agents"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(reports) == 0 {
		return nil
	}
	for _, r := range reports {
		if r.SPIFFEID == "" || !storage.ValidTime(r.LastSeen) {
			return fmt.Errorf("sqlite %s: report without SPIFFE ID or with a bad time: %w", op, storage.ErrInvalidArgument)
		}
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	for _, r := range reports {
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?),
			bundle_seq_ack = ?, workloads = ? WHERE spiffe_id = ?`,
			r.LastSeen.UnixNano(), r.BundleSeqAck, r.Workloads, r.SPIFFEID); err != nil {
			return s.classify(ctx, op, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.classify(ctx, op, err)
	}
	return nil
}

// EvictAgent marks the agent evicted at t and revokes its unexpired agent
// certificates, in one transaction.
func (s *Store) EvictAgent(ctx context.Context, spiffeID string, t time.Time) ([]string, error) {
	const op = "evict agent"
	if t.IsZero() || !storage.ValidTime(t) {
		return nil, fmt.Errorf("sqlite %s: eviction time %s invalid: %w", op, t, storage.ErrInvalidArgument)
	}
	var serials []string
	err := s.controlTx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET evicted_at = ? WHERE spiffe_id = ?`, t.UnixNano(), spiffeID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fmt.Errorf("sqlite %s %s: %w", op, spiffeID, storage.ErrNotFound))
		}
		rows, err := tx.QueryContext(ctx, `UPDATE certificates SET revoked_at = ?
			WHERE spiffe_id = ? AND kind = 'agent' AND not_after >= ? AND revoked_at IS NULL
			RETURNING serial`, t.UnixNano(), spiffeID, t.UnixNano())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var serial string
			if err := rows.Scan(&serial); err != nil {
				return err
			}
			serials = append(serials, serial)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return serials, nil
}

// DenyIdentity adds d to the deny list; an existing entry is kept.
func (s *Store) DenyIdentity(ctx context.Context, d storage.DeniedIdentity) error {
	const op = "deny identity"
	if err := d.Validate(); err != nil {
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	return s.controlTx(ctx, op, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO denied_identities (spiffe_id, created_at, actor, reason)
			VALUES (?, ?, ?, ?) ON CONFLICT (spiffe_id) DO NOTHING`,
			d.SPIFFEID, nanos(d.CreatedAt), d.Actor, d.Reason)
		return err
	})
}

// AllowIdentity removes spiffeID from the deny list.
func (s *Store) AllowIdentity(ctx context.Context, spiffeID string) error {
	const op = "allow identity"
	return s.controlTx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM denied_identities WHERE spiffe_id = ?`, spiffeID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fmt.Errorf("sqlite %s %s: %w", op, spiffeID, storage.ErrNotFound))
		}
		return nil
	})
}

// ListDeniedIdentities returns the deny list ordered by SPIFFE ID.
func (s *Store) ListDeniedIdentities(ctx context.Context) ([]storage.DeniedIdentity, error) {
	const op = "list denied identities"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT spiffe_id, created_at, actor, reason FROM denied_identities ORDER BY spiffe_id`)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var out []storage.DeniedIdentity
	for rows.Next() {
		var (
			d       storage.DeniedIdentity
			created sql.NullInt64
		)
		if err := rows.Scan(&d.SPIFFEID, &created, &d.Actor, &d.Reason); err != nil {
			return nil, s.classify(ctx, op, err)
		}
		d.CreatedAt = fromNanos(created)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}

// ControlSequence reads the control sequence.
func (s *Store) ControlSequence(ctx context.Context) (int64, error) {
	const op = "control sequence"
	if err := s.checkOpen(ctx, op); err != nil {
		return 0, err
	}
	var seq int64
	if err := s.read.QueryRowContext(ctx, `SELECT seq FROM control_sequence WHERE id = 1`).Scan(&seq); err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return seq, nil
}

// Controls reads the sequence and every control in one read transaction.
func (s *Store) Controls(ctx context.Context, now time.Time) (storage.Controls, error) {
	const op = "controls"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.Controls{}, err
	}
	if !storage.ValidTime(now) {
		return storage.Controls{}, fmt.Errorf("sqlite %s: time out of range: %w", op, storage.ErrInvalidArgument)
	}
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return storage.Controls{}, s.classify(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }()
	var c storage.Controls
	if err := tx.QueryRowContext(ctx, `SELECT seq FROM control_sequence WHERE id = 1`).Scan(&c.Sequence); err != nil {
		return storage.Controls{}, s.classify(ctx, op, err)
	}
	for _, q := range []struct {
		sql  string
		args []any
		into *[]string
	}{
		{`SELECT spiffe_id FROM agents WHERE banned = 1 ORDER BY spiffe_id`, nil, &c.BannedAgents},
		{`SELECT spiffe_id FROM denied_identities ORDER BY spiffe_id`, nil, &c.DeniedIdentities},
		{`SELECT serial FROM certificates WHERE kind = 'agent' AND revoked_at IS NOT NULL AND not_after >= ? ORDER BY serial`,
			[]any{now.UnixNano()}, &c.RevokedAgentSerials},
	} {
		if err := queryStrings(ctx, tx, q.sql, q.args, q.into); err != nil {
			return storage.Controls{}, s.classify(ctx, op, err)
		}
	}
	return c, nil
}

func queryStrings(ctx context.Context, tx *sql.Tx, q string, args []any, into *[]string) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return err
		}
		*into = append(*into, v)
	}
	return rows.Err()
}
