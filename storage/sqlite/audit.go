package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// AppendAudit appends events in one transaction; a zero Time is set to the
// store's clock.
func (s *Store) AppendAudit(ctx context.Context, events []storage.AuditEvent) (err error) {
	const op = "append audit"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("sqlite %s: %w", op, err)
		}
	}
	now := s.clock()
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx,
		`INSERT INTO audit (time, actor, action, subject, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	defer stmt.Close()
	for _, e := range events {
		t := e.Time
		if t.IsZero() {
			t = now
		}
		if _, err := stmt.ExecContext(ctx, t.UnixNano(), e.Actor, e.Action, e.Subject, e.Outcome, e.Detail); err != nil {
			return s.classify(ctx, op, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.classify(ctx, op, err)
	}
	return nil
}

// ListAudit returns events matching f, highest ID first (lowest first
// with AfterID).
func (s *Store) ListAudit(ctx context.Context, f storage.AuditFilter) ([]storage.AuditEvent, error) {
	const op = "list audit"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	if !storage.ValidTime(f.Since) {
		return nil, fmt.Errorf("sqlite %s: Since out of range: %w", op, storage.ErrInvalidArgument)
	}
	var (
		where []string
		args  []any
	)
	if f.Actor != "" {
		where, args = append(where, "actor = ?"), append(args, f.Actor)
	}
	if f.Action != "" {
		where, args = append(where, "action = ?"), append(args, f.Action)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, f.Since.UnixNano())
	}
	if f.BeforeID != 0 {
		where, args = append(where, "id < ?"), append(args, f.BeforeID)
	}
	order := "DESC"
	if f.AfterID != 0 {
		where, args, order = append(where, "id > ?"), append(args, f.AfterID), "ASC"
	}
	q := `SELECT id, time, actor, action, subject, outcome, detail FROM audit`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id ` + order + ` LIMIT ?`
	args = append(args, storage.PageSize(f.PageSize))

	rows, err := s.read.QueryContext(ctx, q, args...)
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
