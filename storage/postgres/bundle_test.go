package postgres_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage/postgres"
)

func root(t *testing.T, name string, notAfter time.Time) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

// TestSharedBundle: two replicas (two stores on one database) add roots;
// the stored bundle is their union, its sequence grows once per change,
// and each change is announced to the other replica.
func TestSharedBundle(t *testing.T) {
	dsn := newDSN(t)
	a := newStore(t, postgres.Config{DSN: dsn, Replica: "a"})
	b := newStore(t, postgres.Config{DSN: dsn, Replica: "b"})
	now := time.Now()
	r1, r2 := root(t, "r1", now.Add(time.Hour)), root(t, "r2", now.Add(time.Hour))
	expired := root(t, "old", now.Add(-time.Minute))

	roots, seq, err := b.LoadBundle(t.Context(), "td")
	require.NoError(t, err)
	require.Empty(t, roots)
	require.Zero(t, seq)

	changes := make(chan struct{}, 16)
	go func() {
		_ = b.WatchBundles(t.Context(), func() { changes <- struct{}{} })
	}()
	<-changes // the first call follows the LISTEN

	roots, seq, err = a.AddRoots(t.Context(), "td", []*x509.Certificate{r1, expired}, now)
	require.NoError(t, err)
	require.Equal(t, []*x509.Certificate{r1}, roots, "expired roots are not stored")
	require.EqualValues(t, 1, seq)
	select {
	case <-changes:
	case <-time.After(time.Second):
		t.Fatal("no notification within a second")
	}
	_, seq, err = a.AddRoots(t.Context(), "td", []*x509.Certificate{r1}, now)
	require.NoError(t, err)
	require.EqualValues(t, 1, seq, "nothing new: no change")

	roots, seq, err = b.AddRoots(t.Context(), "td", []*x509.Certificate{r2}, now)
	require.NoError(t, err)
	require.EqualValues(t, 2, seq)
	require.Len(t, roots, 2)
	roots, seq, err = a.LoadBundle(t.Context(), "td")
	require.NoError(t, err)
	require.EqualValues(t, 2, seq)
	require.True(t, roots[0].Equal(r1) && roots[1].Equal(r2))
	select {
	case <-changes:
	case <-time.After(time.Second):
		t.Fatal("no notification within a second")
	}
}

// TestSharedRootCreatedOnce: replicas starting together create one root.
func TestSharedRootCreatedOnce(t *testing.T) {
	dsn := newDSN(t)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		got     [][]byte
	)
	for i := range 4 {
		s := newStore(t, postgres.Config{DSN: dsn})
		wg.Go(func() {
			cert, key, err := s.LoadOrCreateRoot(t.Context(), "td", func() ([]byte, []byte, error) {
				mu.Lock()
				created++
				mu.Unlock()
				return []byte{byte(i)}, []byte("sealed"), nil
			})
			require.NoError(t, err)
			require.Equal(t, []byte("sealed"), key)
			mu.Lock()
			got = append(got, cert)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, 1, created)
	for _, c := range got {
		require.Equal(t, got[0], c)
	}
	boom := errors.New("boom")
	_, _, err := newStore(t, postgres.Config{DSN: dsn}).LoadOrCreateRoot(t.Context(), "other", func() ([]byte, []byte, error) {
		return nil, nil, boom
	})
	require.ErrorIs(t, err, boom)
}
