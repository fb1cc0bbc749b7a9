package storage_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

// fakePruner holds expiry times; PruneCertificates deletes like a store.
type fakePruner struct {
	mu      sync.Mutex
	expiry  []time.Time
	befores []time.Time
	limits  []int
}

func (f *fakePruner) PruneCertificates(_ context.Context, before time.Time, limit int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.befores, f.limits = append(f.befores, before), append(f.limits, limit)
	n := 0
	kept := f.expiry[:0]
	for _, e := range f.expiry {
		if e.Before(before) && n < limit {
			n++
			continue
		}
		kept = append(kept, e)
	}
	f.expiry = kept
	return n, nil
}

func TestRetentionPrunesInBatches(t *testing.T) {
	now := time.Date(2031, 3, 14, 0, 0, 0, 0, time.UTC)
	f := &fakePruner{}
	for i := range 7 { // 5 expired more than 30 days ago, 2 more recently
		f.expiry = append(f.expiry, now.Add(-31*24*time.Hour+time.Duration(i)*time.Hour))
	}
	f.expiry = append(f.expiry, now.Add(-29*24*time.Hour), now.Add(-time.Hour))
	var pauses int
	var pruned []int
	r, err := storage.NewRetention(storage.RetentionConfig{
		Store: f, BatchSize: 2, Clock: func() time.Time { return now },
		After: func(time.Duration) <-chan time.Time {
			pauses++
			c := make(chan time.Time, 1)
			c <- now
			return c
		},
		OnPrune: func(n int) { pruned = append(pruned, n) },
	})
	require.NoError(t, err)
	n, err := r.Prune(t.Context())
	require.NoError(t, err)
	require.Equal(t, 7, n)
	require.Equal(t, []int{2, 2, 2, 1}, pruned)
	require.Equal(t, 3, pauses, "a pause between full batches")
	require.Len(t, f.expiry, 2)
	for i, b := range f.befores {
		require.Equal(t, now.Add(-storage.DefaultRetention), b)
		require.Equal(t, 2, f.limits[i])
	}
}

func TestRetentionConfig(t *testing.T) {
	_, err := storage.NewRetention(storage.RetentionConfig{})
	require.Error(t, err)
	_, err = storage.NewRetention(storage.RetentionConfig{Store: &fakePruner{}, Keep: -time.Second})
	require.Error(t, err)
}
