package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/storage"
)

const agentColumns = `spiffe_id, cluster, node_name, serial, first_seen, last_seen, not_after, banned, bundle_seq_ack,
	workloads, evicted_at`

// UpsertAgent inserts a, or updates an existing agent with a's fields except
// FirstSeen, Banned and EvictedAt, which keep their stored values.
func (s *Store) UpsertAgent(ctx context.Context, a storage.AgentRecord) error {
	const op = "upsert agent"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (spiffe_id) DO UPDATE SET
			cluster = excluded.cluster,
			node_name = excluded.node_name,
			serial = excluded.serial,
			last_seen = excluded.last_seen,
			not_after = excluded.not_after,
			bundle_seq_ack = excluded.bundle_seq_ack,
			workloads = excluded.workloads`,
		a.SPIFFEID, a.Cluster, a.NodeName, a.Serial, nanos(a.FirstSeen), nanos(a.LastSeen),
		nanos(a.NotAfter), a.Banned, a.BundleSeqAck, a.Workloads, nanos(a.EvictedAt))
	return s.classify(ctx, op, err)
}

// GetAgent returns the agent or storage.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, spiffeID string) (storage.AgentRecord, error) {
	const op = "get agent"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.AgentRecord{}, err
	}
	a, err := scanAgent(s.pool.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE spiffe_id = $1`, spiffeID))
	if err != nil {
		return storage.AgentRecord{}, s.classify(ctx, op, err)
	}
	return a, nil
}

// ListAgents returns every agent ordered by SPIFFE ID.
func (s *Store) ListAgents(ctx context.Context) ([]storage.AgentRecord, error) {
	const op = "list agents"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY spiffe_id COLLATE "C"`)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var agents []storage.AgentRecord
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, s.classify(ctx, op, err)
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return agents, nil
}

// SetAgentBanned bans or unbans the agent, or returns storage.ErrNotFound.
// It advances the control sequence, so every replica reloads its bans.
func (s *Store) SetAgentBanned(ctx context.Context, spiffeID string, banned bool) error {
	const op = "set agent banned"
	return s.controlTx(ctx, op, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE agents SET banned = $1 WHERE spiffe_id = $2`, banned, spiffeID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres %s %s: %w", op, spiffeID, storage.ErrNotFound)
		}
		return nil
	})
}

func scanAgent(row pgx.Row) (storage.AgentRecord, error) {
	var (
		a                                        storage.AgentRecord
		firstSeen, lastSeen, notAfter, evictedAt *int64
	)
	if err := row.Scan(&a.SPIFFEID, &a.Cluster, &a.NodeName, &a.Serial, &firstSeen, &lastSeen,
		&notAfter, &a.Banned, &a.BundleSeqAck, &a.Workloads, &evictedAt); err != nil {
		return storage.AgentRecord{}, err
	}
	a.FirstSeen, a.LastSeen, a.NotAfter = fromNanos(firstSeen), fromNanos(lastSeen), fromNanos(notAfter)
	a.EvictedAt = fromNanos(evictedAt)
	return a, nil
}
