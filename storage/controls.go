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

// ReplicaRecord is a CA replica's last heartbeat.
type ReplicaRecord struct {
	Name      string
	StartedAt time.Time
	SeenAt    time.Time
	// Health is "serving" or why the replica is not ready.
	Health string
	// IntermediateKeyID and IntermediateNotAfter describe the replica's
	// active intermediate.
	IntermediateKeyID    string
	IntermediateNotAfter time.Time
}

// Validate checks that the replica has a name and representable times.
// Errors wrap ErrInvalidArgument.
func (r ReplicaRecord) Validate() error {
	if r.Name == "" {
		return fmt.Errorf("replica record: empty name: %w", ErrInvalidArgument)
	}
	for _, t := range []time.Time{r.StartedAt, r.SeenAt, r.IntermediateNotAfter} {
		if !ValidTime(t) {
			return fmt.Errorf("replica record %s: time out of range: %w", r.Name, ErrInvalidArgument)
		}
	}
	return nil
}
