package storage_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
)

func TestWriterCallerContext(t *testing.T) {
	t.Run("cancelled in flight: error, record still committed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.gate = make(chan struct{})
			w, _ := startWriter(t, storage.WriterConfig{Store: fs})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- w.Record(ctx, rec("a1")) }()
			synctest.Wait()
			cancel()
			require.ErrorIs(t, <-done, context.Canceled)
			close(fs.gate)
			synctest.Wait()
			require.True(t, fs.has("a1"), "the transaction had started")
		})
	})
	t.Run("cancelled while queued: skipped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.gate = make(chan struct{})
			w, _ := startWriter(t, storage.WriterConfig{Store: fs})
			var a async
			a.record(t.Context(), w, "first")
			synctest.Wait()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			require.ErrorIs(t, w.Record(ctx, rec("late")), context.DeadlineExceeded)
			close(fs.gate)
			require.NoError(t, a.wait()["first"])
			synctest.Wait()
			require.False(t, fs.has("late"))
			require.Equal(t, []int{1}, fs.batchSizes())
		})
	})
	t.Run("already cancelled: nothing queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			w, _ := startWriter(t, storage.WriterConfig{Store: fs})
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			require.ErrorIs(t, w.Record(ctx, rec("a1")), context.Canceled)
			require.ErrorIs(t, w.RecordAudit(ctx, storage.AuditEvent{}), context.Canceled)
			synctest.Wait()
			require.Empty(t, fs.batchSizes())
			require.Empty(t, fs.auditEvents())
		})
	})
}

func TestWriterShutdown(t *testing.T) {
	t.Run("flushes what is queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.gate = make(chan struct{})
			w, stop := startWriter(t, storage.WriterConfig{Store: fs})
			var a async
			a.record(t.Context(), w, "first")
			synctest.Wait()
			a.record(t.Context(), w, serialRange("q", 5)...)
			require.NoError(t, w.RecordAudit(t.Context(), storage.AuditEvent{Action: "queued"}))
			synctest.Wait()
			go func() {
				synctest.Wait() // until stop is blocked on Run
				close(fs.gate)
			}()
			stop()
			for s, err := range a.wait() {
				require.NoError(t, err, s)
			}
			require.Equal(t, 6, fs.count())
			require.Len(t, fs.auditEvents(), 1)

			err := w.Record(t.Context(), rec("after"))
			require.ErrorIs(t, err, storage.ErrClosed)
			require.ErrorIs(t, err, storage.ErrUnavailable)
			require.ErrorIs(t, w.RecordAudit(t.Context(), storage.AuditEvent{}), storage.ErrClosed)
			require.False(t, fs.has("after"))
		})
	})
	t.Run("gives up after DrainTimeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.gate = make(chan struct{}) // the store hangs
			w, stop := startWriter(t, storage.WriterConfig{
				Store: fs, CommitTimeout: 10 * time.Second, DrainTimeout: 3 * time.Second,
			})
			var a async
			a.record(t.Context(), w, "first")
			synctest.Wait()
			a.record(t.Context(), w, serialRange("q", 5)...)
			synctest.Wait()
			start := time.Now()
			stop()
			// The batch in flight runs to its CommitTimeout, the drain
			// to DrainTimeout.
			require.Equal(t, 13*time.Second, time.Since(start))
			errs := a.wait()
			require.Len(t, errs, 6)
			for s, err := range errs {
				require.ErrorIs(t, err, storage.ErrUnavailable, s)
			}
			require.Zero(t, fs.count())
		})
	})
	t.Run("Record before Run waits for it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			w, err := storage.NewWriter(storage.WriterConfig{Store: fs})
			require.NoError(t, err)
			var a async
			a.record(t.Context(), w, "early")
			synctest.Wait()
			require.Empty(t, fs.batchSizes())
			runWriter(t, w)
			require.NoError(t, a.wait()["early"])
		})
	})
	t.Run("Run twice", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, _ := startWriter(t, storage.WriterConfig{Store: newFakeStore()})
			synctest.Wait() // the first Run is in its loop
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			require.Error(t, w.Run(ctx))
		})
	})
}

func TestWriterAudit(t *testing.T) {
	t.Run("batched, time from the clock", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			clock := func() time.Time { return t0 }
			w, err := storage.NewWriter(storage.WriterConfig{Store: fs, Clock: clock})
			require.NoError(t, err)
			for _, a := range []string{"issue", "reject", "issue"} {
				require.NoError(t, w.RecordAudit(t.Context(), storage.AuditEvent{Actor: "system", Action: a}))
			}
			stop := runWriter(t, w)
			synctest.Wait()
			stop()
			got := fs.auditEvents()
			require.Len(t, got, 3)
			require.Equal(t, t0, got[0].Time)
			require.Equal(t, "reject", got[1].Action)
			st := w.Stats()
			require.EqualValues(t, 1, st.AuditBatches)
			require.EqualValues(t, 3, st.AuditEvents)
		})
	})
	t.Run("queue full drops", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, err := storage.NewWriter(storage.WriterConfig{Store: newFakeStore(), MaxAuditQueue: 2})
			require.NoError(t, err)
			require.NoError(t, w.RecordAudit(t.Context(), storage.AuditEvent{}))
			require.NoError(t, w.RecordAudit(t.Context(), storage.AuditEvent{}))
			require.ErrorIs(t, w.RecordAudit(t.Context(), storage.AuditEvent{}), storage.ErrUnavailable)
			require.EqualValues(t, 1, w.Stats().AuditDropped)
		})
	})
	t.Run("store failure drops", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.auditErr = errors.New("disk full")
			var results []storage.BatchResult
			w, stop := startWriter(t, storage.WriterConfig{
				Store: fs, OnBatch: func(r storage.BatchResult) { results = append(results, r) },
			})
			require.NoError(t, w.RecordAudit(t.Context(), storage.AuditEvent{}))
			synctest.Wait()
			stop()
			require.EqualValues(t, 1, w.Stats().AuditDropped)
			require.Len(t, results, 1)
			require.True(t, results[0].Audit)
			require.Error(t, results[0].Err)
		})
	})
}

func TestWriterOnBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStore()
		fs.gate = make(chan struct{})
		results := make(chan storage.BatchResult, 10)
		w, _ := startWriter(t, storage.WriterConfig{
			Store: fs, OnBatch: func(r storage.BatchResult) { results <- r },
		})
		var a async
		a.record(t.Context(), w, "first")
		synctest.Wait()
		a.record(t.Context(), w, serialRange("q", 3)...)
		synctest.Wait()
		time.Sleep(time.Second) // fake time: the first batch takes 1s
		close(fs.gate)
		a.wait()
		r1, r2 := <-results, <-results
		require.Equal(t, storage.BatchResult{Size: 1, Duration: time.Second}, r1)
		require.Equal(t, storage.BatchResult{Size: 3}, r2)
	})
}

func TestNewWriterValidates(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  storage.WriterConfig
	}{
		{"nil store", storage.WriterConfig{}},
		{"negative batch", storage.WriterConfig{Store: newFakeStore(), MaxBatch: -1}},
		{"negative timeout", storage.WriterConfig{Store: newFakeStore(), CommitTimeout: -time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := storage.NewWriter(tt.cfg)
			require.Error(t, err)
		})
	}
}
