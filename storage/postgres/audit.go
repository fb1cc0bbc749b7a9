package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/storage"
)

// AppendAudit appends events with one COPY (one transaction); a zero Time
// is set to the store's clock. IDs come from an identity column. Appends
// take turns under a transaction advisory lock, so IDs become visible in
// order: a follower reading "after the highest ID seen" (WatchAudit) never
// skips an event whose transaction took a lower ID but committed later.
func (s *Store) AppendAudit(ctx context.Context, events []storage.AuditEvent) error {
	const op = "append audit"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	now := s.clock()
	rows := make([][]any, len(events))
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("postgres %s: %w", op, err)
		}
		t := e.Time
		if t.IsZero() {
			t = now
		}
		rows[i] = []any{t.UnixNano(), e.Actor, e.Action, e.Subject, e.Outcome, e.Detail}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockAudit); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"audit"},
			[]string{"time", "actor", "action", "subject", "outcome", "detail"}, pgx.CopyFromRows(rows))
		return err
	})
	return s.classify(ctx, op, err)
}

// ListAudit returns events matching f, highest ID first (lowest first
// with AfterID).
func (s *Store) ListAudit(ctx context.Context, f storage.AuditFilter) ([]storage.AuditEvent, error) {
	const op = "list audit"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	if !storage.ValidTime(f.Since) {
		return nil, fmt.Errorf("postgres %s: Since out of range: %w", op, storage.ErrInvalidArgument)
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.Action != "" {
		where = append(where, "action = "+arg(f.Action))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(f.Since.UnixNano()))
	}
	if f.BeforeID != 0 {
		where = append(where, "id < "+arg(f.BeforeID))
	}
	order := "DESC"
	if f.AfterID != 0 {
		where, order = append(where, "id > "+arg(f.AfterID)), "ASC"
	}
	q := `SELECT id, time, actor, action, subject, outcome, detail FROM audit`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id ` + order + ` LIMIT ` + arg(storage.PageSize(f.PageSize))

	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var events []storage.AuditEvent
	for rows.Next() {
		var (
			e storage.AuditEvent
			t int64
		)
		if err := rows.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Subject, &e.Outcome, &e.Detail); err != nil {
			return nil, s.classify(ctx, op, err)
		}
		e.Time = time.Unix(0, t).UTC()
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return events, nil
}
