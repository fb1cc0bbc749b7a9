package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lanyard-id/lanyard/storage"
)

var certificateColumnList = []string{"serial", "spiffe_id", "kind", "cluster", "namespace", "service_account",
	"pod_name", "pod_uid", "node_name", "caller", "not_before", "not_after", "sha256", "issuer_key_id",
	"issued_at", "revoked_at"}

var certificateColumns = strings.Join(certificateColumnList, ", ")

// RecordCertificates writes recs with one COPY, which is one transaction:
// all or none. It returns once the commit is flushed (synchronous_commit
// on). A duplicate serial fails the COPY with a unique violation
// (storage.ErrConflict).
func (s *Store) RecordCertificates(ctx context.Context, recs []storage.CertificateRecord) error {
	const op = "record certificates"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("postgres %s: %w", op, err)
		}
	}
	rows := make([][]any, len(recs))
	for i, r := range recs {
		rows[i] = []any{r.Serial, r.SPIFFEID, r.Kind, r.Cluster, r.Namespace, r.ServiceAccount, r.PodName,
			r.PodUID, r.NodeName, r.Caller, nanos(r.NotBefore), nanos(r.NotAfter), r.SHA256, r.IssuerKeyID,
			nanos(r.IssuedAt), nanos(r.RevokedAt)}
	}
	_, err := s.pool.CopyFrom(ctx, pgx.Identifier{"certificates"}, certificateColumnList, pgx.CopyFromRows(rows))
	return s.classify(ctx, op, err)
}

// GetCertificate returns the record with serial or storage.ErrNotFound.
func (s *Store) GetCertificate(ctx context.Context, serial string) (storage.CertificateRecord, error) {
	const op = "get certificate"
	if err := s.checkOpen(ctx, op); err != nil {
		return storage.CertificateRecord{}, err
	}
	r, err := scanCertificate(s.pool.QueryRow(ctx, `SELECT `+certificateColumns+` FROM certificates WHERE serial = $1`, serial))
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
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	where, err := certificateWhere(f, arg)
	if err != nil {
		return storage.CertificatePage{}, fmt.Errorf("postgres %s: %w", op, err)
	}
	if f.PageToken != "" {
		issued, serial, err := storage.DecodePageToken(f.PageToken)
		if err != nil {
			return storage.CertificatePage{}, fmt.Errorf("postgres %s: %w", op, err)
		}
		where = append(where, "(issued_at, serial) < ("+arg(issued)+", "+arg(serial)+")")
	}
	q := `SELECT ` + certificateColumns + ` FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	size := storage.PageSize(f.PageSize)
	q += ` ORDER BY issued_at DESC, serial DESC LIMIT ` + arg(size+1) // one more: is there a next page?

	rows, err := s.pool.Query(ctx, q, args...)
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

// RevokeCertificate sets revoked_at unless it is already set.
func (s *Store) RevokeCertificate(ctx context.Context, serial string, t time.Time) error {
	const op = "revoke certificate"
	if err := s.checkOpen(ctx, op); err != nil {
		return err
	}
	if t.IsZero() || !storage.ValidTime(t) {
		return fmt.Errorf("postgres %s: revocation time %s invalid: %w", op, t, storage.ErrInvalidArgument)
	}
	tag, err := s.pool.Exec(ctx,
		`UPDATE certificates SET revoked_at = COALESCE(revoked_at, $1) WHERE serial = $2`, t.UnixNano(), serial)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres %s %s: %w", op, serial, storage.ErrNotFound)
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
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM certificates`).Scan(&n); err != nil {
		return 0, s.classify(ctx, op, err)
	}
	return n, nil
}

func scanCertificate(row pgx.Row) (storage.CertificateRecord, error) {
	var (
		r                                      storage.CertificateRecord
		notBefore, notAfter, issued, revokedAt *int64
	)
	err := row.Scan(&r.Serial, &r.SPIFFEID, &r.Kind, &r.Cluster, &r.Namespace, &r.ServiceAccount,
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
func nanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}
