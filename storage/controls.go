package storage

import (
	"fmt"
	"time"
)

// GroupBy names the column CountCertificatesBy groups on.
type GroupBy string

// Groupings of CountCertificatesBy.
const (
	GroupBySPIFFEID GroupBy = "spiffe_id"
	GroupByNode     GroupBy = "node"
)

// GroupCount is one group of CountCertificatesBy.
type GroupCount struct {
	Key   string
	Count int64
}

// AgentReport is what an agent said about itself on a call to the CA.
type AgentReport struct {
	SPIFFEID     string
	LastSeen     time.Time
	BundleSeqAck int64
	Workloads    int64
}

// DeniedIdentity is an entry of the deny list: no certificate is issued
// for SPIFFEID while it is there.
type DeniedIdentity struct {
	SPIFFEID  string
	CreatedAt time.Time
	Actor     string // who denied it
	Reason    string
}

// Validate checks that the entry has a SPIFFE ID and a representable
// time. Errors wrap ErrInvalidArgument.
func (d DeniedIdentity) Validate() error {
	if d.SPIFFEID == "" {
		return fmt.Errorf("denied identity: empty SPIFFE ID: %w", ErrInvalidArgument)
	}
	if !ValidTime(d.CreatedAt) {
		return fmt.Errorf("denied identity %s: time out of range: %w", d.SPIFFEID, ErrInvalidArgument)
	}
	return nil
}

// Controls is what every CA replica enforces, as of Sequence.
type Controls struct {
	// Sequence is the control sequence these controls were read at.
	Sequence int64
	// BannedAgents are SPIFFE IDs of banned agents.
	BannedAgents []string
	// DeniedIdentities are SPIFFE IDs on the deny list.
	DeniedIdentities []string
	// RevokedAgentSerials are serials of agent certificates that were
	// revoked (evicted agents) and have not expired.
	RevokedAgentSerials []string
}
