package harness

import (
	"context"
	"database/sql"
	"net/url"
	"testing"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"
)

// withStore opens the store file read-only for the duration of fn, so that
// the test never holds the database open across a restart.
func (d *Dev) withStore(t testing.TB, fn func(ctx context.Context, db *sql.DB) error) {
	t.Helper()
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	dsn := (&url.URL{Scheme: "file", Path: d.DBPath(), RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatalf("harness: open store: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	if err := fn(ctx, db); err != nil {
		t.Fatalf("harness: store %s: %v", d.DBPath(), err)
	}
}

// CertificateCount is the number of certificate records in the store.
func (d *Dev) CertificateCount(t testing.TB) int {
	t.Helper()
	var n int
	d.withStore(t, func(ctx context.Context, db *sql.DB) error {
		return db.QueryRowContext(ctx, "SELECT count(*) FROM certificates").Scan(&n)
	})
	return n
}

// HasCertificate reports whether the store holds a record with serial (hex,
// as the store writes it: big.Int.Text(16)).
func (d *Dev) HasCertificate(t testing.TB, serial string) bool {
	t.Helper()
	return len(d.MissingCertificates(t, []string{serial})) == 0
}

// MissingCertificates returns the serials that have no record in the store.
func (d *Dev) MissingCertificates(t testing.TB, serials []string) []string {
	t.Helper()
	var missing []string
	d.withStore(t, func(ctx context.Context, db *sql.DB) error {
		stmt, err := db.PrepareContext(ctx, "SELECT count(*) FROM certificates WHERE serial = ?")
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, s := range serials {
			var n int
			if err := stmt.QueryRowContext(ctx, s).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				missing = append(missing, s)
			}
		}
		return nil
	})
	return missing
}

// IssuedAt is when the CA signed and recorded the certificate with serial
// (hex, as the store writes it), from its record; it fails the test when
// there is no record.
func (d *Dev) IssuedAt(t testing.TB, serial string) time.Time {
	t.Helper()
	var nanos int64
	d.withStore(t, func(ctx context.Context, db *sql.DB) error {
		return db.QueryRowContext(ctx, "SELECT issued_at FROM certificates WHERE serial = ?", serial).Scan(&nanos)
	})
	return time.Unix(0, nanos)
}
