package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

const certificateColumns = `serial, spiffe_id, kind, cluster, namespace, service_account, pod_name,
	pod_uid, node_name, caller, not_before, not_after, sha256, issuer_key_id, issued_at, revoked_at`

const insertCertificateSQL = `INSERT INTO certificates (` + certificateColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// RecordCertificates inserts recs in one transaction through a prepared
// statement; it returns after the commit is durable (synchronous=FULL).
func (s *Store) RecordCertificates(ctx context.Context, recs []storage.CertificateRecord) (err error) {
	const op = "record certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("sqlite %s: %w", op, err)
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
	stmt := tx.StmtContext(ctx, s.insertCert)
	defer stmt.Close()
	for _, r := range recs {
		if _, err := stmt.ExecContext(ctx,
			r.Serial, r.SPIFFEID, r.Kind, r.Cluster, r.Namespace, r.ServiceAccount, r.PodName,
			r.PodUID, r.NodeName, r.Caller, nanos(r.NotBefore), nanos(r.NotAfter), r.SHA256,
			r.IssuerKeyID, nanos(r.IssuedAt), nanos(r.RevokedAt),
		); err != nil {
			return s.classify(ctx, op, fmt.Errorf("serial %s: %w", r.Serial, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return s.classify(ctx, op, err)
	}
	return nil
}

// GetCertificate returns the record with serial or storage.ErrNotFound.
func (s *Store) GetCertificate(ctx context.Context, serial string) (storage.CertificateRecord, error) {
	const op = "get certificate"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.CertificateRecord{}, err
	}
	row := s.read.QueryRowContext(ctx, `SELECT `+certificateColumns+` FROM certificates WHERE serial = ?`, serial)
	r, err := scanCertificate(row)
	if err != nil {
		return storage.CertificateRecord{}, s.classify(ctx, op, err)
	}
	return r, nil
}

// ListCertificates returns one page of certificates matching f, newest
// first, using keyset paging on (issued_at, serial).
func (s *Store) ListCertificates(ctx context.Context, f storage.CertificateFilter) (storage.CertificatePage, error) {
	const op = "list certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.CertificatePage{}, err
	}
	where, args, err := certificateWhere(f)
	if err != nil {
		return storage.CertificatePage{}, fmt.Errorf("sqlite %s: %w", op, err)
	}
	if f.PageToken != "" {
		issued, serial, err := storage.DecodePageToken(f.PageToken)
		if err != nil {
			return storage.CertificatePage{}, fmt.Errorf("sqlite %s: %w", op, err)
		}
		where = append(where, "(issued_at, serial) < (?, ?)")
		args = append(args, issued, serial)
	}
	q := `SELECT ` + certificateColumns + ` FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	size := storage.PageSize(f.PageSize)
	q += ` ORDER BY issued_at DESC, serial DESC LIMIT ?`
	args = append(args, size+1) // one more tells whether a next page exists

	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return storage.CertificatePage{}, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var page storage.CertificatePage
	for rows.Next() {
		r, err := scanCertificate(rows)
		if err != nil {
			return storage.CertificatePage{}, s.classify(ctx, op, err)
		}
		page.Certificates = append(page.Certificates, r)
	}
	if err := rows.Err(); err != nil {
		return storage.CertificatePage{}, s.classify(ctx, op, err)
	}
	if len(page.Certificates) > size {
		page.Certificates = page.Certificates[:size]
		last := page.Certificates[size-1]
		page.NextPageToken = storage.EncodePageToken(last.IssuedAt.UnixNano(), last.Serial)
	}
	return page, nil
}

// certificateWhere turns the filter fields of f (not its paging) into SQL
// conditions.
func certificateWhere(f storage.CertificateFilter) ([]string, []any, error) {
	for _, t := range []time.Time{f.ValidAt, f.ExpiresBefore, f.IssuedSince} {
		if !storage.ValidTime(t) {
			return nil, nil, fmt.Errorf("filter time %s out of range: %w", t, storage.ErrInvalidArgument)
		}
	}
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ col, val string }{
		{"spiffe_id", f.SPIFFEID}, {"namespace", f.Namespace}, {"service_account", f.ServiceAccount},
		{"node_name", f.NodeName}, {"kind", f.Kind}, {"caller", f.Caller},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.ValidAt.IsZero() {
		where = append(where, "not_before <= ? AND not_after >= ?")
		args = append(args, f.ValidAt.UnixNano(), f.ValidAt.UnixNano())
	}
	if !f.ExpiresBefore.IsZero() {
		where, args = append(where, "not_after < ?"), append(args, f.ExpiresBefore.UnixNano())
	}
	if !f.IssuedSince.IsZero() {
		where, args = append(where, "issued_at >= ?"), append(args, f.IssuedSince.UnixNano())
	}
	if f.Revoked {
		where = append(where, "revoked_at IS NOT NULL")
	}
	return where, args, nil
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
		return nil, fmt.Errorf("sqlite %s: grouping %q: %w", op, by, storage.ErrInvalidArgument)
	}
	where, args, err := certificateWhere(f)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", op, err)
	}
	q := `SELECT ` + col + `, COUNT(*) FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` GROUP BY ` + col + ` ORDER BY COUNT(*) DESC, ` + col
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var out []storage.GroupCount
	for rows.Next() {
		var g storage.GroupCount
		if err := rows.Scan(&g.Key, &g.Count); err != nil {
			return nil, s.classify(ctx, op, err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}

// RevokeCertificate sets revoked_at unless it is already set.
func (s *Store) RevokeCertificate(ctx context.Context, serial string, t time.Time) error {
	const op = "revoke certificate"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if t.IsZero() || !storage.ValidTime(t) {
		return fmt.Errorf("sqlite %s: revocation time %s invalid: %w", op, t, storage.ErrInvalidArgument)
	}
	res, err := s.write.ExecContext(ctx,
		`UPDATE certificates SET revoked_at = COALESCE(revoked_at, ?) WHERE serial = ?`, t.UnixNano(), serial)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.classify(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite %s %s: %w", op, serial, storage.ErrNotFound)
	}
	return nil
}

// CountCertificates counts all recorded certificates.
func (s *Store) CountCertificates(ctx context.Context) (int64, error) {
	const op = "count certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return 0, err
	}
	var n int64
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM certificates`).Scan(&n); err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return n, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanCertificate(sc scanner) (storage.CertificateRecord, error) {
	var (
		r                                      storage.CertificateRecord
		notBefore, notAfter, issued, revokedAt sql.NullInt64
	)
	err := sc.Scan(&r.Serial, &r.SPIFFEID, &r.Kind, &r.Cluster, &r.Namespace, &r.ServiceAccount,
		&r.PodName, &r.PodUID, &r.NodeName, &r.Caller, &notBefore, &notAfter, &r.SHA256,
		&r.IssuerKeyID, &issued, &revokedAt)
	if err != nil {
		return storage.CertificateRecord{}, err
	}
	r.NotBefore, r.NotAfter = fromNanos(notBefore), fromNanos(notAfter)
	r.IssuedAt, r.RevokedAt = fromNanos(issued), fromNanos(revokedAt)
	return r, nil
}

// nanos stores t as UTC Unix nanoseconds, the zero time as NULL.
func nanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// PruneCertificates deletes at most limit records whose NotAfter is before
// before (storage.Pruner), oldest expiry first, in one short transaction
// on the writer connection.
func (s *Store) PruneCertificates(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "prune certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 || !storage.ValidTime(before) {
		return 0, fmt.Errorf("sqlite %s: bad limit or time: %w", op, storage.ErrInvalidArgument)
	}
	res, err := s.write.ExecContext(ctx, `DELETE FROM certificates WHERE serial IN (
		SELECT serial FROM certificates WHERE not_after < ? ORDER BY not_after LIMIT ?)`, before.UnixNano(), limit)
	if err != nil {
		return 0, s.classify(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return int(n), nil
}
