package storage

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Implementations wrap them with context; test with
// errors.Is.
var (
	// ErrNotFound reports that the requested record does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict reports a write that collides with an existing record
	// (for example a certificate serial recorded twice).
	ErrConflict = errors.New("storage: conflict")
	// ErrUnavailable reports that the store cannot be reached or cannot
	// commit right now. The CA answers codes.Unavailable when it sees it.
	ErrUnavailable = errors.New("storage: unavailable")
	// ErrClosed reports use of a store or writer after Close. A Store wraps
	// it together with ErrUnavailable, so callers that only check
	// ErrUnavailable still answer codes.Unavailable.
	ErrClosed = errors.New("storage: closed")
	// ErrInvalidArgument reports a request the store refuses as malformed:
	// a record missing a required field, a time it cannot represent, a page
	// token it did not issue. The CA answers codes.InvalidArgument (or
	// Internal, when the record came from its own pipeline).
	ErrInvalidArgument = errors.New("storage: invalid argument")
	// ErrSchemaTooNew reports a database migrated by a newer Lanyard: this
	// code does not know its schema and refuses to touch it. It happens at
	// start only (the CA does not start), so it never reaches the wire.
	ErrSchemaTooNew = errors.New("storage: database schema is newer than this binary")
)

// CertificateRecord is the log entry for one issued certificate. Every
// certificate that leaves the CA has one, written before the answer leaves.
type CertificateRecord struct {
	// Serial is the certificate serial number in lowercase hex, no leading
	// zeros (big.Int.Text(16)).
	Serial string
	// SPIFFEID is the URI SAN of the certificate.
	SPIFFEID string
	// Kind says what the certificate is for: "workload", "agent", "ca-serving",
	// "istio". Free text, indexed.
	Kind string
	// Kubernetes identity of the subject, empty when not applicable.
	Cluster        string
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	NodeName       string
	// Caller is who asked: an agent SPIFFE ID, "token", or an admin identity.
	Caller string
	// NotBefore and NotAfter are the validity bounds of the certificate.
	NotBefore time.Time
	NotAfter  time.Time
	// SHA256 is the SHA-256 digest of the certificate DER.
	SHA256 []byte
	// IssuerKeyID is the subject key id (hex) of the issuing CA certificate.
	IssuerKeyID string
	// IssuedAt is when the CA signed it.
	IssuedAt time.Time
	// RevokedAt is set when the certificate was revoked; zero otherwise.
	RevokedAt time.Time
}

// CertificateFilter selects certificates in ListCertificates. Zero fields
// match everything.
type CertificateFilter struct {
	SPIFFEID       string
	Namespace      string
	ServiceAccount string
	NodeName       string
	Kind           string
	// Caller, when set, keeps certificates requested by this caller (an
	// agent's SPIFFE ID).
	Caller string
	// ExpiresBefore, when non-zero, keeps certificates with NotAfter
	// before it; IssuedSince keeps those with IssuedAt at or after it.
	ExpiresBefore time.Time
	IssuedSince   time.Time
	// Revoked, when true, keeps only revoked certificates.
	Revoked bool
	// ValidAt, when non-zero, keeps only certificates whose validity
	// interval contains it: NotBefore <= ValidAt <= NotAfter, both ends
	// inclusive as in X.509.
	ValidAt time.Time
	// PageSize bounds the result (default 100 when zero or negative, larger
	// values are capped at 1000); PageToken is the NextPageToken of a
	// previous call with the same filter. An empty NextPageToken means the
	// last page.
	PageSize  int
	PageToken string
}

// CertificatePage is one page of ListCertificates, newest first.
type CertificatePage struct {
	Certificates  []CertificateRecord
	NextPageToken string
}

// AgentRecord is a node agent known to the CA, upserted on every attestation.
// SPIFFEID is the key and must be set.
type AgentRecord struct {
	SPIFFEID     string
	Cluster      string
	NodeName     string
	Serial       string // serial of the current agent SVID
	FirstSeen    time.Time
	LastSeen     time.Time
	NotAfter     time.Time // expiry of the current agent SVID
	Banned       bool
	BundleSeqAck int64 // the last bundle sequence the agent acknowledged
	// Workloads is how many workload SVIDs the agent last said it holds.
	Workloads int64
	// EvictedAt is when an admin last evicted the agent (zero: never). An
	// upsert keeps it.
	EvictedAt time.Time
}

// AuditEvent is one entry of the audit log.
type AuditEvent struct {
	ID      int64 // assigned by the store
	Time    time.Time
	Actor   string // who did it (SPIFFE ID, "admin:uid=0", "system")
	Action  string // "issue", "reject", "attest-agent", "rotate-intermediate", ...
	Subject string // what it touched (SPIFFE ID, serial)
	Outcome string // "ok" or the error code
	Detail  string // short free text, never secrets
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	Actor  string
	Action string
	// Since, when non-zero, keeps events with Time at or after it.
	Since time.Time
	// PageSize bounds the result (default 100 when zero or negative,
	// larger values are capped at 1000).
	PageSize int
	// BeforeID, when non-zero, returns events with ID < BeforeID (paging:
	// pass the ID of the last event of the previous page).
	BeforeID int64
	// AfterID, when non-zero, returns events with ID > AfterID oldest
	// first instead (following the log: pass the highest ID seen).
	AfterID int64
}

// Store is the CA's persistent state. Implementations are safe for
// concurrent use. Every method may return an error wrapping ErrUnavailable
// when the backing database cannot be reached, an error wrapping the
// context's error when ctx ends first, and an error wrapping both
// ErrClosed and ErrUnavailable after Close.
//
// Times are returned in UTC and round-trip exactly (nanoseconds); the zero
// time means "unset" (RevokedAt of a live certificate). Times must lie
// between the years 1678 and 2262 (see CertificateRecord.Validate).
//
// storage/storagetest holds the conformance suite every Store passes.
type Store interface {
	// RecordCertificates writes all records in one transaction: either all
	// are durable when it returns nil, or none is. A duplicate serial (in
	// the store or within recs) fails the whole batch with ErrConflict; a
	// record failing Validate fails it with ErrInvalidArgument.
	RecordCertificates(ctx context.Context, recs []CertificateRecord) error
	// GetCertificate returns the record with this serial or ErrNotFound.
	GetCertificate(ctx context.Context, serial string) (CertificateRecord, error)
	// ListCertificates returns certificates matching f, newest first.
	ListCertificates(ctx context.Context, f CertificateFilter) (CertificatePage, error)
	// RevokeCertificate marks the certificate revoked at t (ErrNotFound if
	// absent). Revoking a revoked certificate keeps the first time.
	RevokeCertificate(ctx context.Context, serial string, t time.Time) error
	// CountCertificates returns how many certificates are recorded.
	CountCertificates(ctx context.Context) (int64, error)

	// CountCertificatesBy counts the certificates matching f (paging
	// fields ignored) grouped by GroupBy, largest groups first.
	CountCertificatesBy(ctx context.Context, by GroupBy, f CertificateFilter) ([]GroupCount, error)

	// UpsertAgent creates or updates the agent keyed by SPIFFEID, keeping
	// FirstSeen, Banned and EvictedAt of an existing record.
	UpsertAgent(ctx context.Context, a AgentRecord) error
	// GetAgent returns the agent or ErrNotFound.
	GetAgent(ctx context.Context, spiffeID string) (AgentRecord, error)
	// ListAgents returns all agents ordered by SPIFFE ID.
	ListAgents(ctx context.Context) ([]AgentRecord, error)
	// SetAgentBanned bans or unbans an agent (ErrNotFound if absent) and
	// advances the control sequence.
	SetAgentBanned(ctx context.Context, spiffeID string, banned bool) error
	// ReportAgents sets LastSeen, BundleSeqAck and Workloads of the agents
	// named in reports, in one transaction; unknown agents are skipped.
	ReportAgents(ctx context.Context, reports []AgentReport) error
	// EvictAgent sets the agent's EvictedAt to t, revokes at t every agent
	// certificate with its SPIFFE ID that is unexpired at t, and advances
	// the control sequence, in one transaction. It returns the revoked
	// serials (ErrNotFound if the agent is unknown).
	EvictAgent(ctx context.Context, spiffeID string, t time.Time) ([]string, error)

	// DenyIdentity puts a SPIFFE ID on the deny list (an identity already
	// there keeps its first entry) and advances the control sequence.
	DenyIdentity(ctx context.Context, d DeniedIdentity) error
	// AllowIdentity takes a SPIFFE ID off the deny list (ErrNotFound if it
	// is not there) and advances the control sequence.
	AllowIdentity(ctx context.Context, spiffeID string) error
	// ListDeniedIdentities returns the deny list ordered by SPIFFE ID.
	ListDeniedIdentities(ctx context.Context) ([]DeniedIdentity, error)
	// ControlSequence returns the control sequence: a number that grows
	// with every change to bans, evictions and the deny list. Replicas poll
	// it and reload Controls when it moves.
	ControlSequence(ctx context.Context) (int64, error)
	// Controls returns, read in one transaction, what every replica
	// enforces: banned agents, denied identities and the serials of agent
	// certificates revoked and unexpired at now.
	Controls(ctx context.Context, now time.Time) (Controls, error)

	// AppendAudit appends events in one transaction. IDs are assigned by the
	// store, increasing in append order; a zero Time is set to the store's
	// clock.
	AppendAudit(ctx context.Context, events []AuditEvent) error
	// ListAudit returns events matching f, newest (highest ID) first.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)

	// UpsertReplica records a CA replica's heartbeat, keyed by Name.
	UpsertReplica(ctx context.Context, r ReplicaRecord) error
	// ListReplicas returns every replica ordered by name.
	ListReplicas(ctx context.Context) ([]ReplicaRecord, error)

	// Ping checks that the store can be reached and written.
	Ping(ctx context.Context) error
	// Close releases the store. Calling it again returns nil.
	Close() error
}
