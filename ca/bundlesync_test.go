package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memBundle is an in-memory SharedBundle: what two replicas' stores share.
type memBundle struct {
	mu    sync.Mutex
	roots []*x509.Certificate
	seq   int64
	err   error
}

func (m *memBundle) AddRoots(_ context.Context, _ string, roots []*x509.Certificate, _ time.Time) ([]*x509.Certificate, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, 0, m.err
	}
	changed := false
	for _, r := range roots {
		found := false
		for _, have := range m.roots {
			found = found || have.Equal(r)
		}
		if !found {
			m.roots, changed = append(m.roots, r), true
		}
	}
	if changed {
		m.seq++
	}
	return append([]*x509.Certificate(nil), m.roots...), m.seq, nil
}

func (m *memBundle) LoadBundle(context.Context, string) ([]*x509.Certificate, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*x509.Certificate(nil), m.roots...), m.seq, m.err
}

// TestSharedBundleAcrossReplicas: two authorities with different upstream
// roots serve the union, and a root one adds reaches the other through
// the store (Sync) with the store's sequence.
func TestSharedBundleAcrossReplicas(t *testing.T) {
	store := &memBundle{}
	a := newAuthHarness(t, AuthorityConfig{Shared: store})
	b := newAuthHarness(t, AuthorityConfig{Shared: store})
	require.NoError(t, a.auth.Prepare(t.Context()))
	require.EqualValues(t, 1, a.auth.Bundle().Sequence)

	bs, err := NewBundleSync(BundleSyncConfig{Authority: a.auth, Store: store})
	require.NoError(t, err)
	changed := a.auth.BundleChanged()
	require.NoError(t, b.auth.Prepare(t.Context())) // b's own root joins the stored bundle
	require.EqualValues(t, 2, b.auth.Bundle().Sequence)
	require.Len(t, b.auth.Bundle().Roots, 2)
	require.False(t, isClosed(changed))
	require.NoError(t, bs.Sync(t.Context()))
	require.True(t, isClosed(changed), "a's WatchBundle streams are woken")
	require.Equal(t, b.auth.Bundle().Roots, a.auth.Bundle().Roots)
	require.EqualValues(t, 2, a.auth.Bundle().Sequence)

	changed = a.auth.BundleChanged()
	require.NoError(t, bs.Sync(t.Context()))
	require.False(t, isClosed(changed), "nothing changed in the store")
}

// TestBundleSyncNotifications: a notification makes Run re-read at once.
func TestBundleSyncNotifications(t *testing.T) {
	store := &memBundle{}
	a := newAuthHarness(t, AuthorityConfig{Shared: store})
	require.NoError(t, a.auth.Prepare(t.Context()))
	notify := make(chan func(), 1)
	s, err := NewBundleSync(BundleSyncConfig{Authority: a.auth, Store: store, Interval: time.Hour,
		Watch: func(ctx context.Context, onChange func()) error {
			notify <- onChange
			<-ctx.Done()
			return nil
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	onChange := <-notify

	other := newAuthHarness(t, AuthorityConfig{})
	require.NoError(t, other.auth.Prepare(t.Context()))
	changed := a.auth.BundleChanged()
	_, _, err = store.AddRoots(t.Context(), "", other.auth.Bundle().Roots, time.Time{})
	require.NoError(t, err)
	onChange()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the notification did not reach the authority")
	}
	require.Len(t, a.auth.Bundle().Roots, 2)
	cancel()
	require.NoError(t, <-done)
}

// TestSharedBundleStoreDown: a replica whose root is already in the bundle
// renews its intermediate while the store is down; a root the bundle
// lacks is refused.
func TestSharedBundleStoreDown(t *testing.T) {
	store := &memBundle{}
	a := newAuthHarness(t, AuthorityConfig{Shared: store})
	require.NoError(t, a.auth.Prepare(t.Context()))
	store.err = errors.New("store down")
	require.NoError(t, a.auth.rotate(t.Context()))

	b := newAuthHarness(t, AuthorityConfig{Shared: store})
	require.Error(t, b.auth.Prepare(t.Context()))
}
