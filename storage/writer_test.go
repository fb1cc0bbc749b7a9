package storage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lanyard-id/lanyard/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2031, time.March, 14, 15, 9, 26, 535897932, time.UTC)

func rec(serial string) storage.CertificateRecord {
	return storage.CertificateRecord{
		Serial: serial, SPIFFEID: "spiffe://cluster.local/ns/default/sa/web", Kind: "workload",
		NotBefore: t0, NotAfter: t0.Add(time.Hour), IssuedAt: t0,
	}
}

// startWriter runs a Writer until the returned stop is called (or the test
// ends) and checks that Run returns nil.
func startWriter(t *testing.T, cfg storage.WriterConfig) (w *storage.Writer, stop func()) {
	t.Helper()
	w, err := storage.NewWriter(cfg)
	require.NoError(t, err)
	return w, runWriter(t, w)
}

func runWriter(t testing.TB, w *storage.Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

// async runs Record for each serial in its own goroutine; wait returns the
// errors by serial once all have returned.
type async struct {
	mu   sync.Mutex
	wg   sync.WaitGroup
	errs map[string]error
}

func (a *async) record(ctx context.Context, w *storage.Writer, serials ...string) {
	for _, s := range serials {
		a.wg.Go(func() {
			err := w.Record(ctx, rec(s))
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.errs == nil {
				a.errs = map[string]error{}
			}
			a.errs[s] = err
		})
	}
}

func (a *async) wait() map[string]error {
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.errs
}

func serialRange(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%03d", prefix, i))
	}
	return out
}

func TestWriterLoneRecordCommitsWithoutDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStore()
		w, _ := startWriter(t, storage.WriterConfig{Store: fs})
		synctest.Wait() // Run is idle
		start := time.Now()
		require.NoError(t, w.Record(t.Context(), rec("a1")))
		require.Zero(t, time.Since(start), "the writer waited on a timer")
		require.Equal(t, []int{1}, fs.batchSizes())
		require.True(t, fs.has("a1"))
	})
}

func TestWriterGroupCommit(t *testing.T) {
	for _, tt := range []struct {
		name     string
		maxBatch int
		queued   int
		want     []int
	}{
		{"all queued in one batch", 0, 50, []int{1, 50}},
		{"split at MaxBatch", 16, 50, []int{1, 16, 16, 16, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := newFakeStore()
				fs.gate = make(chan struct{})
				w, _ := startWriter(t, storage.WriterConfig{Store: fs, MaxBatch: tt.maxBatch})
				var a async
				a.record(t.Context(), w, "first")
				synctest.Wait() // "first" is in flight, held by the gate
				a.record(t.Context(), w, serialRange("q", tt.queued)...)
				synctest.Wait() // all others queued behind it
				close(fs.gate)
				for s, err := range a.wait() {
					require.NoError(t, err, s)
				}
				require.Equal(t, tt.want, fs.batchSizes())
				require.Equal(t, tt.queued+1, fs.count())
				st := w.Stats()
				require.EqualValues(t, len(tt.want), st.Batches)
				require.EqualValues(t, tt.queued+1, st.Records)
				require.Equal(t, tt.want[len(tt.want)-1], st.LastBatchSize)
				require.Zero(t, st.Queued)
			})
		})
	}
}

func TestWriterFailureIsUnavailableForWholeBatch(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"plain error", errors.New("disk I/O error")},
		{"store says unavailable", fmt.Errorf("fsync: %w", storage.ErrUnavailable)},
		{"store ran out of time", fmt.Errorf("commit: %w", context.DeadlineExceeded)},
		{"store not found", fmt.Errorf("odd: %w", storage.ErrNotFound)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := newFakeStore()
				fs.gate = make(chan struct{})
				fs.fail = func([]storage.CertificateRecord) error { return tt.err }
				w, _ := startWriter(t, storage.WriterConfig{Store: fs})
				var a async
				a.record(t.Context(), w, "first")
				synctest.Wait()
				a.record(t.Context(), w, serialRange("q", 10)...)
				synctest.Wait()
				close(fs.gate)
				errs := a.wait()
				require.Len(t, errs, 11)
				for s, err := range errs {
					require.ErrorIs(t, err, storage.ErrUnavailable, s)
					require.NotErrorIs(t, err, context.DeadlineExceeded, s)
					require.NotErrorIs(t, err, storage.ErrNotFound, s)
				}
				require.Zero(t, fs.count())
				require.Equal(t, []int{1, 10}, fs.batchSizes(), "no retries for a store failure")
				st := w.Stats()
				require.EqualValues(t, 11, st.Failed)
				require.Zero(t, st.Records)
			})
		})
	}
}

func TestWriterConflictIsolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStore()
		fs.committed["dup"] = rec("dup")
		fs.gate = make(chan struct{})
		w, _ := startWriter(t, storage.WriterConfig{Store: fs})

		var a async
		a.record(t.Context(), w, "first")
		synctest.Wait()
		a.record(t.Context(), w, append(serialRange("q", 8), "dup")...)
		twice := make(chan error, 2) // the same serial twice in one batch
		for range 2 {
			go func() { twice <- w.Record(t.Context(), rec("x")) }()
		}
		synctest.Wait()
		close(fs.gate)

		for s, err := range a.wait() {
			if s == "dup" {
				require.ErrorIs(t, err, storage.ErrConflict)
				require.NotErrorIs(t, err, storage.ErrUnavailable)
				continue
			}
			require.NoError(t, err, s)
		}
		e1, e2 := <-twice, <-twice
		require.True(t, (e1 == nil) != (e2 == nil), "exactly one of the twin serials commits: %v, %v", e1, e2)
		require.ErrorIs(t, errors.Join(e1, e2), storage.ErrConflict)

		sizes := fs.batchSizes()
		require.Equal(t, []int{1, 11}, sizes[:2])
		// Halving isolates each of the 2 bad records in at most
		// 2·⌈log2 11⌉ transactions: 16 for both, whatever the order.
		require.LessOrEqual(t, len(sizes[2:]), 16, "too many retries: %v", sizes)
		require.Equal(t, 1+1+8+1, fs.count())
		st := w.Stats()
		require.EqualValues(t, 1, st.ConflictSplit)
		require.EqualValues(t, 2, st.Failed)
		require.EqualValues(t, 10, st.Records)
	})
}

func TestWriterConflictBisects(t *testing.T) {
	for _, tt := range []struct {
		size, maxRetries int
	}{
		{2, 2}, {3, 4}, {64, 12}, {512, 18},
	} {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := newFakeStore()
				fs.committed["q000"] = rec("q000")
				fs.gate = make(chan struct{})
				w, _ := startWriter(t, storage.WriterConfig{Store: fs})
				var a async
				a.record(t.Context(), w, "first")
				synctest.Wait()
				a.record(t.Context(), w, serialRange("q", tt.size)...)
				synctest.Wait()
				close(fs.gate)
				for s, err := range a.wait() {
					if s == "q000" {
						require.ErrorIs(t, err, storage.ErrConflict)
					} else {
						require.NoError(t, err, s)
					}
				}
				sizes := fs.batchSizes()
				require.Equal(t, []int{1, tt.size}, sizes[:2])
				require.LessOrEqual(t, len(sizes)-2, tt.maxRetries, "retries: %v", sizes[2:])
				require.Equal(t, tt.size+1, fs.count())
			})
		})
	}
}

func TestWriterInvalidRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStore()
		w, _ := startWriter(t, storage.WriterConfig{Store: fs})
		bad := rec("")
		require.ErrorIs(t, w.Record(t.Context(), bad), storage.ErrInvalidArgument)
		require.Empty(t, fs.batchSizes())
	})
}

func TestWriterCommitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStore()
		fs.gate = make(chan struct{}) // never opens
		w, _ := startWriter(t, storage.WriterConfig{Store: fs, CommitTimeout: time.Second})
		start := time.Now()
		err := w.Record(t.Context(), rec("a1"))
		require.ErrorIs(t, err, storage.ErrUnavailable)
		require.Equal(t, time.Second, time.Since(start))
	})
}

// With records arriving one by one while the writer is busy (the CA's
// open loop), the commit delay lets them share transactions; without it
// nearly every record pays a transaction of its own.
func TestWriterCommitDelayGroupsArrivals(t *testing.T) {
	batches := func(delay time.Duration) int {
		var n int
		synctest.Test(t, func(t *testing.T) {
			fs := newFakeStore()
			fs.fail = func([]storage.CertificateRecord) error {
				time.Sleep(200 * time.Microsecond) // a commit with its fsync
				return nil
			}
			w, _ := startWriter(t, storage.WriterConfig{Store: fs, CommitDelay: delay})
			synctest.Wait()
			var wg sync.WaitGroup
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(time.Duration(i) * 100 * time.Microsecond) // one arrival every 100µs
					assert.NoError(t, w.Record(t.Context(), rec(fmt.Sprintf("c%03d", i))))
				}()
			}
			wg.Wait()
			n = len(fs.batchSizes())
		})
		return n
	}
	without, with := batches(-1), batches(0)
	t.Logf("transactions for 200 records: %d without commit delay, %d with the default", without, with)
	require.Less(t, with*2, without, "the delay should at least halve the transactions")
}
