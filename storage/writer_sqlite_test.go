package storage_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

func newSQLite(tb testing.TB) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.New(tb.Context(), sqlite.Config{Path: filepath.Join(tb.TempDir(), "lanyard.db")})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestWriterSQLite(t *testing.T) {
	s := newSQLite(t)
	w, stop := startWriter(t, storage.WriterConfig{Store: s})

	const n = 200
	var a async
	a.record(t.Context(), w, serialRange("c", n)...)
	for serial, err := range a.wait() {
		require.NoError(t, err, serial)
	}
	for _, serial := range serialRange("c", n) {
		got, err := s.GetCertificate(t.Context(), serial)
		require.NoError(t, err, serial)
		require.Equal(t, rec(serial), got)
	}
	st := w.Stats()
	require.EqualValues(t, n, st.Records)
	t.Logf("%d concurrent records in %d transactions", n, st.Batches)
	require.Less(t, st.Batches, uint64(n), "concurrent records were not grouped")

	t.Run("conflict", func(t *testing.T) {
		var a async
		a.record(t.Context(), w, append(serialRange("d", 50), "c000")...)
		for serial, err := range a.wait() {
			if serial == "c000" {
				require.ErrorIs(t, err, storage.ErrConflict)
				require.NotErrorIs(t, err, storage.ErrUnavailable)
				continue
			}
			require.NoError(t, err, serial)
		}
		count, err := s.CountCertificates(t.Context())
		require.NoError(t, err)
		require.EqualValues(t, n+50, count)
	})

	stop()
	err := w.Record(t.Context(), rec("after"))
	require.ErrorIs(t, err, storage.ErrClosed)
}

func TestWriterSQLiteStoreGone(t *testing.T) {
	s := newSQLite(t)
	w, _ := startWriter(t, storage.WriterConfig{Store: s})
	require.NoError(t, w.Record(t.Context(), rec("before")))
	require.NoError(t, s.Close())

	var a async
	a.record(t.Context(), w, serialRange("c", 20)...)
	for serial, err := range a.wait() {
		require.ErrorIs(t, err, storage.ErrUnavailable, serial)
	}
	require.EqualValues(t, 20, w.Stats().Failed)
}

// BenchmarkWriterSQLite measures certificates recorded per second through
// the writer into a SQLite file with synchronous=FULL, at several numbers
// of concurrent callers (parallelism × GOMAXPROCS goroutines). Direct is
// the baseline: one RecordCertificates transaction per certificate.
func BenchmarkWriterSQLite(b *testing.B) {
	for _, p := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writer/parallelism=%d", p), func(b *testing.B) {
			s := newSQLite(b)
			w, err := storage.NewWriter(storage.WriterConfig{Store: s})
			require.NoError(b, err)
			stop := runWriter(b, w)
			var next atomic.Int64
			b.SetParallelism(p)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := rec(fmt.Sprintf("%x", next.Add(1)))
					if err := w.Record(b.Context(), r); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			st := w.Stats()
			b.ReportMetric(float64(st.Records)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(st.Records)/float64(max(st.Batches, 1)), "records/batch")
		})
	}
	for _, p := range []int{1, 8} {
		b.Run(fmt.Sprintf("direct/parallelism=%d", p), func(b *testing.B) {
			benchmarkDirect(b, p)
		})
	}
}

func benchmarkDirect(b *testing.B, parallelism int) {
	{
		s := newSQLite(b)
		var next atomic.Int64
		b.SetParallelism(parallelism)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r := rec(fmt.Sprintf("%x", next.Add(1)))
				if err := s.RecordCertificates(b.Context(), []storage.CertificateRecord{r}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(next.Load())/time.Since(start).Seconds(), "records/s")
	}
}
