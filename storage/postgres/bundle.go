package postgres

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/internal/backoff"
)

// bundleChannel is the NOTIFY channel of bundle changes; the payload is
// the trust domain.
const bundleChannel = "lanyard_bundle"

// AddRoots adds to the stored trust bundle of td the roots it does not
// hold yet, drops roots that expired before now, and returns the stored
// bundle and its sequence. A change bumps the sequence by one and is
// announced to every replica (NOTIFY lanyard_bundle) when it commits. Rows
// are locked for the transaction, so replicas adding roots at once
// serialise.
func (s *Store) AddRoots(ctx context.Context, td string, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, int64, error) {
	const op = "add roots"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, 0, err
	}
	var (
		out []*x509.Certificate
		seq int64
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Make sure a row exists to lock, then lock it.
		if _, err := tx.Exec(ctx, `INSERT INTO bundles (trust_domain, sequence, roots, updated_at)
			VALUES ($1, 0, '', $2) ON CONFLICT (trust_domain) DO NOTHING`, td, now.UnixNano()); err != nil {
			return err
		}
		var der []byte
		if err := tx.QueryRow(ctx, `SELECT sequence, roots FROM bundles WHERE trust_domain = $1 FOR UPDATE`, td).
			Scan(&seq, &der); err != nil {
			return err
		}
		stored, err := x509.ParseCertificates(der)
		if err != nil {
			return fmt.Errorf("stored bundle of %s: %w", td, err)
		}
		merged := mergeRoots(stored, roots, now)
		out = merged
		if sameRoots(stored, merged) {
			return nil
		}
		seq++
		if _, err := tx.Exec(ctx, `UPDATE bundles SET sequence = $2, roots = $3, updated_at = $4 WHERE trust_domain = $1`,
			td, seq, concatDER(merged), now.UnixNano()); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, bundleChannel, td)
		return err
	})
	if err != nil {
		return nil, 0, s.classify(ctx, op, err)
	}
	return out, seq, nil
}

// LoadBundle returns the stored roots of td and their sequence; no roots
// and sequence 0 when nothing is stored yet.
func (s *Store) LoadBundle(ctx context.Context, td string) ([]*x509.Certificate, int64, error) {
	const op = "load bundle"
	if err := s.checkOpen(ctx, op); err != nil {
		return nil, 0, err
	}
	var (
		seq int64
		der []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT sequence, roots FROM bundles WHERE trust_domain = $1`, td).Scan(&seq, &der)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, s.classify(ctx, op, err)
	}
	roots, err := x509.ParseCertificates(der)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres %s: stored bundle of %s: %w", op, td, err)
	}
	return roots, seq, nil
}

// WatchBundles calls onChange whenever any replica changes a stored
// bundle (LISTEN lanyard_bundle), and once after every (re)connection,
// since notifications sent while it was not listening are lost. It holds
// one connection of its own, reconnects with backoff, and returns nil when
// ctx ends.
func (s *Store) WatchBundles(ctx context.Context, onChange func()) error {
	failures := 0
	for ctx.Err() == nil {
		err := s.listen(ctx, onChange, func() { failures = 0 })
		if ctx.Err() != nil || s.closed.Load() {
			return nil
		}
		failures++
		d := backoff.Exponential(failures, 100*time.Millisecond, 5*time.Second)
		s.log.Warn("bundle notifications interrupted", "error", err, "retry_in", d)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

func (s *Store) listen(ctx context.Context, onChange, connected func()) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A listening connection is never given back to the pool.
	conn := pooled.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+bundleChannel); err != nil {
		return err
	}
	connected()
	onChange()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		onChange()
	}
}

// mergeRoots is stored plus the roots it lacks, without the roots that
// expired before now, in a stable order (stored first).
func mergeRoots(stored, add []*x509.Certificate, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	seen := map[string]bool{}
	for _, c := range append(append([]*x509.Certificate{}, stored...), add...) {
		if seen[string(c.Raw)] || now.After(c.NotAfter) {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, c)
	}
	return out
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

func concatDER(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, c.Raw...)
	}
	return b
}
