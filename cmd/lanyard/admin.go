package main

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/ca/server"
	"github.com/lanyard-id/lanyard/ca/tokens"
	"github.com/lanyard-id/lanyard/storage"
)

// AdminFileConfig configures the admin API (lanyardctl).
type AdminFileConfig struct {
	// Socket is the admin Unix socket (default <dataDir>/admin.sock;
	// "none" turns it off). SocketMode is its permissions (default 0600).
	Socket     string `yaml:"socket"`
	SocketMode string `yaml:"socketMode"`
	// AllowedUIDs may use the socket (default: the CA's uid and root).
	AllowedUIDs []uint32 `yaml:"allowedUIDs"`
	// AdminIDs are SPIFFE IDs that may call the admin API on the TLS port
	// with their X.509-SVID.
	AdminIDs []string `yaml:"adminIDs"`
	// AuditSummaryInterval is how often issuance and rejection counts go
	// to the audit log (default 1m; negative: never).
	AuditSummaryInterval time.Duration `yaml:"auditSummaryInterval"`
	// ReplicaName names this replica in `lanyardctl ca status` (default
	// the hostname, which is the pod name in Kubernetes).
	ReplicaName string `yaml:"replicaName"`
}

// buildAdmin makes the admin API's configuration and listens on its
// socket. The socket is closed by the server, or by the caller on error.
func buildAdmin(cfg FileConfig, td spiffeid.TrustDomain, w *storage.Writer, stats []tokens.ClusterStats) (*server.AdminConfig, error) {
	a := cfg.Admin
	out := &server.AdminConfig{
		AllowedUIDs: a.AllowedUIDs, Audit: w, StoreType: cfg.Store.Type, ReplicaName: a.ReplicaName,
		SummaryInterval: a.AuditSummaryInterval, Verifiers: verifierStatus(stats),
	}
	if out.StoreType == "" {
		out.StoreType = "sqlite"
	}
	for _, s := range a.AdminIDs {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, fmt.Errorf("admin.adminIDs: %w", err)
		}
		if !id.MemberOf(td) {
			return nil, fmt.Errorf("admin.adminIDs: %s is not in trust domain %s", id, td)
		}
		out.AdminIDs = append(out.AdminIDs, id)
	}
	if a.Socket == "none" {
		return out, nil
	}
	path := a.Socket
	if path == "" {
		path = filepath.Join(cfg.DataDir, "admin.sock")
	}
	mode := fs.FileMode(0o600)
	if a.SocketMode != "" {
		m, err := strconv.ParseUint(a.SocketMode, 8, 32)
		if err != nil {
			return nil, fmt.Errorf("admin.socketMode %q: %w", a.SocketMode, err)
		}
		mode = fs.FileMode(m)
	}
	lis, err := agent.ListenSocket(path, mode)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	out.Socket = lis
	return out, nil
}

// verifierStatus reads each cluster's verifier counters and key fetch
// time for `lanyardctl ca status`.
func verifierStatus(stats []tokens.ClusterStats) func() []server.VerifierStatus {
	return func() []server.VerifierStatus {
		out := make([]server.VerifierStatus, 0, len(stats))
		for _, cs := range stats {
			st := cs.Source.Stats()
			v := server.VerifierStatus{Cluster: cs.Cluster, Method: cs.Method, Requests: st.Requests, CacheHits: st.CacheHits, Calls: st.Calls}
			if cs.Keys != nil {
				v.LastKeyFetch = cs.Keys.KeysFetchedAt()
			}
			out = append(out, v)
		}
		return out
	}
}
