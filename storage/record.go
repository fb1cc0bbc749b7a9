package storage

import (
	"fmt"
	"time"
)

// Page sizes of ListCertificates and ListAudit.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// PageSize returns the page size a Store uses for a requested size n:
// DefaultPageSize when n <= 0, at most MaxPageSize.
func PageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	default:
		return n
	}
}

// The times a Store can represent: Unix nanoseconds in an int64.
var (
	minTime = time.Unix(0, -1<<63).UTC()
	maxTime = time.Unix(0, 1<<63-1).UTC()
)

// ValidTime reports whether t can be stored: zero, or between the years
// 1678 and 2262 (Unix nanoseconds in an int64).
func ValidTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(minTime) && !t.After(maxTime))
}

// Validate checks the fields every store requires: Serial, SPIFFEID,
// NotBefore, NotAfter and IssuedAt set, NotAfter not before NotBefore, and
// every time representable (ValidTime). Errors wrap ErrInvalidArgument.
func (r CertificateRecord) Validate() error {
	switch {
	case r.Serial == "":
		return fmt.Errorf("certificate record: empty serial: %w", ErrInvalidArgument)
	case r.SPIFFEID == "":
		return fmt.Errorf("certificate record %s: empty SPIFFE ID: %w", r.Serial, ErrInvalidArgument)
	case r.NotBefore.IsZero(), r.NotAfter.IsZero(), r.IssuedAt.IsZero():
		return fmt.Errorf("certificate record %s: NotBefore, NotAfter and IssuedAt are required: %w",
			r.Serial, ErrInvalidArgument)
	case r.NotAfter.Before(r.NotBefore):
		return fmt.Errorf("certificate record %s: NotAfter before NotBefore: %w", r.Serial, ErrInvalidArgument)
	}
	for _, t := range []time.Time{r.NotBefore, r.NotAfter, r.IssuedAt, r.RevokedAt} {
		if !ValidTime(t) {
			return fmt.Errorf("certificate record %s: time %s out of range: %w", r.Serial, t, ErrInvalidArgument)
		}
	}
	return nil
}

// Validate checks that the agent has a SPIFFE ID and representable times.
// Errors wrap ErrInvalidArgument.
func (a AgentRecord) Validate() error {
	if a.SPIFFEID == "" {
		return fmt.Errorf("agent record: empty SPIFFE ID: %w", ErrInvalidArgument)
	}
	for _, t := range []time.Time{a.FirstSeen, a.LastSeen, a.NotAfter, a.EvictedAt} {
		if !ValidTime(t) {
			return fmt.Errorf("agent record %s: time %s out of range: %w", a.SPIFFEID, t, ErrInvalidArgument)
		}
	}
	return nil
}

// Validate checks that the event's time is representable. Errors wrap
// ErrInvalidArgument.
func (e AuditEvent) Validate() error {
	if !ValidTime(e.Time) {
		return fmt.Errorf("audit event: time %s out of range: %w", e.Time, ErrInvalidArgument)
	}
	return nil
}
