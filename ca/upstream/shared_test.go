package upstream_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca/upstream"
)

// memRoots is an in-memory RootStore with the store's locking.
type memRoots struct {
	mu          sync.Mutex
	cert, key   []byte
	createCalls int
}

func (m *memRoots) LoadOrCreateRoot(_ context.Context, _ string, create func() ([]byte, []byte, error)) ([]byte, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cert == nil {
		m.createCalls++
		c, k, err := create()
		if err != nil {
			return nil, nil, err
		}
		m.cert, m.key = c, k
	}
	return m.cert, m.key, nil
}

func sealKeyFile(t *testing.T) string {
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "seal.key")
	require.NoError(t, os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600))
	return path
}

func TestSharedSelfSigned(t *testing.T) {
	store := &memRoots{}
	keyFile := sealKeyFile(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		roots []string
	)
	for range 3 { // replicas starting together
		wg.Go(func() {
			s, err := upstream.NewSharedSelfSigned(t.Context(), upstream.SharedSelfSignedConfig{
				Store: store, SealKeyFile: keyFile, TrustDomain: "example.org"})
			require.NoError(t, err)
			b, err := s.Bundle(t.Context())
			require.NoError(t, err)
			mu.Lock()
			roots = append(roots, string(b[0].Raw))
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, 1, store.createCalls)
	require.Equal(t, roots[0], roots[1])
	require.Equal(t, roots[0], roots[2])
	require.NotContains(t, string(store.key), "PRIVATE KEY", "the key is sealed")

	_, err := upstream.NewSharedSelfSigned(t.Context(), upstream.SharedSelfSignedConfig{
		Store: store, SealKeyFile: sealKeyFile(t), TrustDomain: "example.org"})
	require.ErrorContains(t, err, "cannot unseal", "another seal key")

	_, err = upstream.NewSharedSelfSigned(t.Context(), upstream.SharedSelfSignedConfig{
		Store: store, SealKeyFile: keyFile, TrustDomain: "other.org"})
	require.ErrorContains(t, err, "cannot unseal", "the sealed key is bound to its trust domain")

	short := filepath.Join(t.TempDir(), "short.key")
	require.NoError(t, os.WriteFile(short, []byte("c2hvcnQ="), 0o600))
	_, err = upstream.NewSharedSelfSigned(t.Context(), upstream.SharedSelfSignedConfig{
		Store: &memRoots{}, SealKeyFile: short, TrustDomain: "example.org"})
	require.ErrorContains(t, err, "want 32 bytes")
}
