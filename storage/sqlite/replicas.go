package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/lanyard-id/lanyard/storage"
)

// UpsertReplica writes the replica's heartbeat.
func (s *Store) UpsertReplica(ctx context.Context, r storage.ReplicaRecord) error {
	const op = "upsert replica"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	_, err := s.write.ExecContext(ctx, `INSERT INTO replicas
		(name, started_at, seen_at, health, intermediate_key_id, intermediate_not_after) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at,
			health = excluded.health, intermediate_key_id = excluded.intermediate_key_id,
			intermediate_not_after = excluded.intermediate_not_after`,
		r.Name, nanos(r.StartedAt), nanos(r.SeenAt), r.Health, r.IntermediateKeyID, nanos(r.IntermediateNotAfter))
	if err != nil {
		return s.classify(ctx, op, err)
	}
	return nil
}

// ListReplicas returns every replica ordered by name.
func (s *Store) ListReplicas(ctx context.Context) ([]storage.ReplicaRecord, error) {
	const op = "list replicas"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT name, started_at, seen_at, health, intermediate_key_id,
		intermediate_not_after FROM replicas ORDER BY name`)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var out []storage.ReplicaRecord
	for rows.Next() {
		var (
			r                       storage.ReplicaRecord
			started, seen, notAfter sql.NullInt64
		)
		if err := rows.Scan(&r.Name, &started, &seen, &r.Health, &r.IntermediateKeyID, &notAfter); err != nil {
			return nil, s.classify(ctx, op, err)
		}
		r.StartedAt, r.SeenAt, r.IntermediateNotAfter = fromNanos(started), fromNanos(seen), fromNanos(notAfter)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}
