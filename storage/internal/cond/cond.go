// Package cond builds the SQL conditions of storage filters once for both
// SQL stores. Each store passes an arg function that adds a parameter and
// returns its placeholder ("?" for SQLite, "$n" for PostgreSQL), so the
// conditions and their parameters always match.
package cond

import (
	"fmt"
	"time"

	"github.com/lanyard-id/lanyard/storage"
)

// Certificates turns the filter fields of f (not its paging) into SQL
// conditions on the certificates table, to be joined with AND. A filter
// time the stores cannot represent wraps storage.ErrInvalidArgument.
func Certificates(f storage.CertificateFilter, arg func(any) string) ([]string, error) {
	for _, t := range []time.Time{f.ValidAt, f.ExpiresBefore, f.IssuedSince} {
		if !storage.ValidTime(t) {
			return nil, fmt.Errorf("filter time %s out of range: %w", t, storage.ErrInvalidArgument)
		}
	}
	var conds []string
	for _, c := range []struct{ col, val string }{
		{"spiffe_id", f.SPIFFEID}, {"namespace", f.Namespace}, {"service_account", f.ServiceAccount},
		{"node_name", f.NodeName}, {"kind", f.Kind}, {"caller", f.Caller},
	} {
		if c.val != "" {
			conds = append(conds, c.col+" = "+arg(c.val))
		}
	}
	if !f.ValidAt.IsZero() {
		at := f.ValidAt.UnixNano()
		conds = append(conds, "not_before <= "+arg(at)+" AND not_after >= "+arg(at))
	}
	if !f.ExpiresBefore.IsZero() {
		conds = append(conds, "not_after < "+arg(f.ExpiresBefore.UnixNano()))
	}
	if !f.IssuedSince.IsZero() {
		conds = append(conds, "issued_at >= "+arg(f.IssuedSince.UnixNano()))
	}
	if f.Revoked {
		conds = append(conds, "revoked_at IS NOT NULL")
	}
	return conds, nil
}
