package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

// testPrune checks storage.Pruner: only records expired before the cut
// go, in batches of at most the limit; audit events stay.
func testPrune(t *testing.T, s storage.Store) {
	p, ok := s.(storage.Pruner)
	require.True(t, ok, "every Store implements storage.Pruner")
	ctx := t.Context()
	require.NoError(t, s.RecordCertificates(ctx, certs(0, 10))) // NotAfter = base + i s + 1 h
	require.NoError(t, s.AppendAudit(ctx, []storage.AuditEvent{event(1, "system", "issue")}))

	cut := base.Add(time.Hour + 7*time.Second) // cert(0)..cert(6) expired before it
	n, err := p.PruneCertificates(ctx, cut, 4)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	n, err = p.PruneCertificates(ctx, cut, 4)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = p.PruneCertificates(ctx, cut, 4)
	require.NoError(t, err)
	require.Zero(t, n)

	count, err := s.CountCertificates(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, count)
	for i := 7; i < 10; i++ {
		_, err := s.GetCertificate(ctx, cert(i).Serial)
		require.NoError(t, err, "cert %d expires at or after the cut", i)
	}
	events, err := s.ListAudit(ctx, storage.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, events, 1, "audit events are kept")
}
