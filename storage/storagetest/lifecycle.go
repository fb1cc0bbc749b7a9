package storagetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

func testConcurrentRecord(t *testing.T, s storage.Store) {
	ctx := t.Context()
	const writers, perWriter = 16, 10
	errs := make(chan error, 2*writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			// Half the goroutines also read, to mix reads into the writes.
			errs <- s.RecordCertificates(ctx, certs(w*perWriter, (w+1)*perWriter))
			if w%2 == 0 {
				_, err := s.ListCertificates(ctx, storage.CertificateFilter{PageSize: 5})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	n, err := s.CountCertificates(ctx)
	require.NoError(t, err)
	require.EqualValues(t, writers*perWriter, n)
	for _, r := range certs(0, writers*perWriter) {
		_, err := s.GetCertificate(ctx, r.Serial)
		require.NoError(t, err)
	}
}

func testPing(t *testing.T, s storage.Store) {
	require.NoError(t, s.Ping(t.Context()))
}

// calls exercises every Store method once.
func calls() []struct {
	name string
	call func(ctx context.Context, s storage.Store) error
} {
	return []struct {
		name string
		call func(ctx context.Context, s storage.Store) error
	}{
		{"RecordCertificates", func(ctx context.Context, s storage.Store) error {
			return s.RecordCertificates(ctx, certs(100, 101))
		}},
		{"GetCertificate", func(ctx context.Context, s storage.Store) error {
			_, err := s.GetCertificate(ctx, cert(0).Serial)
			return err
		}},
		{"ListCertificates", func(ctx context.Context, s storage.Store) error {
			_, err := s.ListCertificates(ctx, storage.CertificateFilter{})
			return err
		}},
		{"RevokeCertificate", func(ctx context.Context, s storage.Store) error {
			return s.RevokeCertificate(ctx, cert(0).Serial, base)
		}},
		{"CountCertificates", func(ctx context.Context, s storage.Store) error {
			_, err := s.CountCertificates(ctx)
			return err
		}},
		{"UpsertAgent", func(ctx context.Context, s storage.Store) error {
			return s.UpsertAgent(ctx, agent("node-9"))
		}},
		{"GetAgent", func(ctx context.Context, s storage.Store) error {
			_, err := s.GetAgent(ctx, agent("node-1").SPIFFEID)
			return err
		}},
		{"ListAgents", func(ctx context.Context, s storage.Store) error {
			_, err := s.ListAgents(ctx)
			return err
		}},
		{"SetAgentBanned", func(ctx context.Context, s storage.Store) error {
			return s.SetAgentBanned(ctx, agent("node-1").SPIFFEID, true)
		}},
		{"AppendAudit", func(ctx context.Context, s storage.Store) error {
			return s.AppendAudit(ctx, []storage.AuditEvent{event(1, "system", "issue")})
		}},
		{"ListAudit", func(ctx context.Context, s storage.Store) error {
			_, err := s.ListAudit(ctx, storage.AuditFilter{})
			return err
		}},
		{"CountCertificatesBy", func(ctx context.Context, s storage.Store) error {
			_, err := s.CountCertificatesBy(ctx, storage.GroupByNode, storage.CertificateFilter{})
			return err
		}},
		{"ReportAgents", func(ctx context.Context, s storage.Store) error {
			return s.ReportAgents(ctx, []storage.AgentReport{{SPIFFEID: agent("node-1").SPIFFEID, LastSeen: base}})
		}},
		{"EvictAgent", func(ctx context.Context, s storage.Store) error {
			_, err := s.EvictAgent(ctx, agent("node-1").SPIFFEID, base)
			return err
		}},
		{"DenyIdentity", func(ctx context.Context, s storage.Store) error {
			return s.DenyIdentity(ctx, storage.DeniedIdentity{SPIFFEID: cert(0).SPIFFEID, CreatedAt: base})
		}},
		{"AllowIdentity", func(ctx context.Context, s storage.Store) error {
			return s.AllowIdentity(ctx, cert(0).SPIFFEID)
		}},
		{"ListDeniedIdentities", func(ctx context.Context, s storage.Store) error {
			_, err := s.ListDeniedIdentities(ctx)
			return err
		}},
		{"ControlSequence", func(ctx context.Context, s storage.Store) error {
			_, err := s.ControlSequence(ctx)
			return err
		}},
		{"Controls", func(ctx context.Context, s storage.Store) error {
			_, err := s.Controls(ctx, base)
			return err
		}},
		{"UpsertReplica", func(ctx context.Context, s storage.Store) error {
			return s.UpsertReplica(ctx, storage.ReplicaRecord{Name: "ca-0", SeenAt: base})
		}},
		{"ListReplicas", func(ctx context.Context, s storage.Store) error {
			_, err := s.ListReplicas(ctx)
			return err
		}},
		{"Ping", func(ctx context.Context, s storage.Store) error { return s.Ping(ctx) }},
	}
}

// seed writes one certificate and one agent, so that the calls of calls()
// would succeed on an open store.
func seed(t *testing.T, s storage.Store) {
	t.Helper()
	require.NoError(t, s.RecordCertificates(t.Context(), certs(0, 1)))
	require.NoError(t, s.UpsertAgent(t.Context(), agent("node-1")))
	require.NoError(t, s.DenyIdentity(t.Context(), storage.DeniedIdentity{SPIFFEID: cert(0).SPIFFEID, CreatedAt: base}))
}

func testClosed(t *testing.T, s storage.Store) {
	seed(t, s)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "second Close")
	for _, tt := range calls() {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t.Context(), s)
			require.ErrorIs(t, err, storage.ErrClosed)
			require.ErrorIs(t, err, storage.ErrUnavailable)
		})
	}
}

func testCancelled(t *testing.T, s storage.Store) {
	seed(t, s)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Unix(1, 0))
	defer cancel2()
	for _, tt := range calls() {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.call(cancelled, s), context.Canceled)
			require.ErrorIs(t, tt.call(expired, s), context.DeadlineExceeded)
		})
	}
	_, err := s.GetCertificate(t.Context(), cert(100).Serial)
	require.ErrorIs(t, err, storage.ErrNotFound, "a cancelled RecordCertificates wrote")
	n, err := s.CountCertificates(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
