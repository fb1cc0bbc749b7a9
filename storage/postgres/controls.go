package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/storage"
)

// controlTx runs fn in a transaction and advances the control sequence in
// it. An error fn returns that already wraps ErrNotFound or
// ErrInvalidArgument is returned as is; any other is classified.
func (s *Store) controlTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE control_sequence SET seq = seq + 1 WHERE id = 1`)
		return err
	})
	if err != nil && (errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidArgument)) {
		return err
	}
	return s.classify(ctx, op, err)
}

// ReportAgents updates what the agents reported, in one transaction.
func (s *Store) ReportAgents(ctx context.Context, reports []storage.AgentReport) error {
	const op = "report agents"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(reports) == 0 {
		return nil
	}
	for _, r := range reports {
		if r.SPIFFEID == "" || !storage.ValidTime(r.LastSeen) {
			return fmt.Errorf("postgres %s: report without SPIFFE ID or with a bad time: %w", op, storage.ErrInvalidArgument)
		}
	}
	b := &pgx.Batch{}
	for _, r := range reports {
		b.Queue(`UPDATE agents SET last_seen = GREATEST(COALESCE(last_seen, 0), $1),
			bundle_seq_ack = $2, workloads = $3 WHERE spiffe_id = $4`,
			r.LastSeen.UnixNano(), r.BundleSeqAck, r.Workloads, r.SPIFFEID)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	return s.classify(ctx, op, err)
}

// EvictAgent marks the agent evicted at t and revokes its unexpired agent
// certificates, in one transaction.
func (s *Store) EvictAgent(ctx context.Context, spiffeID string, t time.Time) ([]string, error) {
	const op = "evict agent"
	if t.IsZero() || !storage.ValidTime(t) {
		return nil, fmt.Errorf("postgres %s: eviction time %s invalid: %w", op, t, storage.ErrInvalidArgument)
	}
	var serials []string
	err := s.controlTx(ctx, op, func(tx pgx.Tx) error {
		serials = nil
		tag, err := tx.Exec(ctx, `UPDATE agents SET evicted_at = $1 WHERE spiffe_id = $2`, t.UnixNano(), spiffeID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres %s %s: %w", op, spiffeID, storage.ErrNotFound)
		}
		rows, err := tx.Query(ctx, `UPDATE certificates SET revoked_at = $1
			WHERE spiffe_id = $2 AND kind = 'agent' AND not_after >= $1 AND revoked_at IS NULL
			RETURNING serial`, t.UnixNano(), spiffeID)
		if err != nil {
			return err
		}
		serials, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
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
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	return s.controlTx(ctx, op, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO denied_identities (spiffe_id, created_at, actor, reason)
			VALUES ($1, $2, $3, $4) ON CONFLICT (spiffe_id) DO NOTHING`,
			d.SPIFFEID, nanos(d.CreatedAt), d.Actor, d.Reason)
		return err
	})
}

// AllowIdentity removes spiffeID from the deny list.
func (s *Store) AllowIdentity(ctx context.Context, spiffeID string) error {
	const op = "allow identity"
	return s.controlTx(ctx, op, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM denied_identities WHERE spiffe_id = $1`, spiffeID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres %s %s: %w", op, spiffeID, storage.ErrNotFound)
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
	rows, err := s.pool.Query(ctx, `SELECT spiffe_id, created_at, actor, reason FROM denied_identities ORDER BY spiffe_id COLLATE "C"`)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.DeniedIdentity, error) {
		var (
			d       storage.DeniedIdentity
			created *int64
		)
		err := row.Scan(&d.SPIFFEID, &created, &d.Actor, &d.Reason)
		d.CreatedAt = fromNanos(created)
		return d, err
	})
	if err != nil {
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
	if err := s.pool.QueryRow(ctx, `SELECT seq FROM control_sequence WHERE id = 1`).Scan(&seq); err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return seq, nil
}

// Controls reads the sequence and every control in one repeatable-read,
// read-only transaction.
func (s *Store) Controls(ctx context.Context, now time.Time) (storage.Controls, error) {
	const op = "controls"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.Controls{}, err
	}
	if !storage.ValidTime(now) {
		return storage.Controls{}, fmt.Errorf("postgres %s: time out of range: %w", op, storage.ErrInvalidArgument)
	}
	var c storage.Controls
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		c = storage.Controls{}
		if err := tx.QueryRow(ctx, `SELECT seq FROM control_sequence WHERE id = 1`).Scan(&c.Sequence); err != nil {
			return err
		}
		for _, q := range []struct {
			sql  string
			args []any
			into *[]string
		}{
			{`SELECT spiffe_id FROM agents WHERE banned ORDER BY spiffe_id COLLATE "C"`, nil, &c.BannedAgents},
			{`SELECT spiffe_id FROM denied_identities ORDER BY spiffe_id COLLATE "C"`, nil, &c.DeniedIdentities},
			{`SELECT serial FROM certificates WHERE kind = 'agent' AND revoked_at IS NOT NULL AND not_after >= $1 ORDER BY serial COLLATE "C"`,
				[]any{now.UnixNano()}, &c.RevokedAgentSerials},
		} {
			rows, err := tx.Query(ctx, q.sql, q.args...)
			if err != nil {
				return err
			}
			if *q.into, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(*q.into) == 0 {
				*q.into = nil
			}
		}
		return nil
	})
	if err != nil {
		return storage.Controls{}, s.classify(ctx, op, err)
	}
	return c, nil
}

// certificateWhere turns the filter fields of f (not its paging) into SQL
// conditions; arg adds a parameter and returns its placeholder.
func certificateWhere(f storage.CertificateFilter, arg func(any) string) ([]string, error) {
	for _, t := range []time.Time{f.ValidAt, f.ExpiresBefore, f.IssuedSince} {
		if !storage.ValidTime(t) {
			return nil, fmt.Errorf("filter time %s out of range: %w", t, storage.ErrInvalidArgument)
		}
	}
	var where []string
	for _, c := range []struct{ col, val string }{
		{"spiffe_id", f.SPIFFEID}, {"namespace", f.Namespace}, {"service_account", f.ServiceAccount},
		{"node_name", f.NodeName}, {"kind", f.Kind}, {"caller", f.Caller},
	} {
		if c.val != "" {
			where = append(where, c.col+" = "+arg(c.val))
		}
	}
	if !f.ValidAt.IsZero() {
		at := arg(f.ValidAt.UnixNano())
		where = append(where, "not_before <= "+at+" AND not_after >= "+at)
	}
	if !f.ExpiresBefore.IsZero() {
		where = append(where, "not_after < "+arg(f.ExpiresBefore.UnixNano()))
	}
	if !f.IssuedSince.IsZero() {
		where = append(where, "issued_at >= "+arg(f.IssuedSince.UnixNano()))
	}
	if f.Revoked {
		where = append(where, "revoked_at IS NOT NULL")
	}
	return where, nil
}

// CountCertificatesBy counts the certificates matching f grouped by the
// SPIFFE ID or the node, largest groups first (ties by key).
func (s *Store) CountCertificatesBy(ctx context.Context, by storage.GroupBy, f storage.CertificateFilter) ([]storage.GroupCount, error) {
	const op = "count certificates by"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	var col string
	switch by {
	case storage.GroupBySPIFFEID:
		col = "spiffe_id"
	case storage.GroupByNode:
		col = "node_name"
	default:
		return nil, fmt.Errorf("postgres %s: grouping %q: %w", op, by, storage.ErrInvalidArgument)
	}
	var args []any
	where, err := certificateWhere(f, func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	})
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", op, err)
	}
	q := `SELECT ` + col + `, COUNT(*) FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` GROUP BY ` + col + ` ORDER BY COUNT(*) DESC, ` + col + ` COLLATE "C"`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.GroupCount, error) {
		var g storage.GroupCount
		err := row.Scan(&g.Key, &g.Count)
		return g, err
	})
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}

// UpsertReplica writes the replica's heartbeat.
func (s *Store) UpsertReplica(ctx context.Context, r storage.ReplicaRecord) error {
	const op = "upsert replica"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO replicas
		(name, started_at, seen_at, health, intermediate_key_id, intermediate_not_after) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at,
			health = excluded.health, intermediate_key_id = excluded.intermediate_key_id,
			intermediate_not_after = excluded.intermediate_not_after`,
		r.Name, nanos(r.StartedAt), nanos(r.SeenAt), r.Health, r.IntermediateKeyID, nanos(r.IntermediateNotAfter))
	return s.classify(ctx, op, err)
}

// ListReplicas returns every replica ordered by name.
func (s *Store) ListReplicas(ctx context.Context) ([]storage.ReplicaRecord, error) {
	const op = "list replicas"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT name, started_at, seen_at, health, intermediate_key_id,
		intermediate_not_after FROM replicas ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.ReplicaRecord, error) {
		var (
			r                       storage.ReplicaRecord
			started, seen, notAfter *int64
		)
		err := row.Scan(&r.Name, &started, &seen, &r.Health, &r.IntermediateKeyID, &notAfter)
		r.StartedAt, r.SeenAt, r.IntermediateNotAfter = fromNanos(started), fromNanos(seen), fromNanos(notAfter)
		return r, err
	})
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}
