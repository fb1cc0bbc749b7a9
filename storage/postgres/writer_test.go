package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/postgres"
)

// TestWriterGroupCommit: the storage.Writer drives the PostgreSQL store as
// it does SQLite: concurrent records share transactions (one COPY each),
// and a duplicate serial fails alone.
func TestWriterGroupCommit(t *testing.T) {
	s := newStore(t, postgres.Config{})
	w, err := storage.NewWriter(storage.WriterConfig{Store: s})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	const n = 200
	record := func(serials []string) map[string]error {
		var mu sync.Mutex
		errs := map[string]error{}
		var wg sync.WaitGroup
		for _, sn := range serials {
			wg.Go(func() {
				err := w.Record(t.Context(), rec(sn))
				mu.Lock()
				errs[sn] = err
				mu.Unlock()
			})
		}
		wg.Wait()
		return errs
	}
	var serials []string
	for i := range n {
		serials = append(serials, fmt.Sprintf("c%03d", i))
	}
	for sn, err := range record(serials) {
		require.NoError(t, err, sn)
	}
	st := w.Stats()
	t.Logf("%d concurrent records in %d transactions", n, st.Batches)
	require.Less(t, st.Batches, uint64(n), "concurrent records were not grouped")
	count, err := s.CountCertificates(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, n, count)

	errs := record([]string{"d1", "d2", "d3", "c000"})
	require.ErrorIs(t, errs["c000"], storage.ErrConflict)
	require.NotErrorIs(t, errs["c000"], storage.ErrUnavailable)
	for _, sn := range []string{"d1", "d2", "d3"} {
		require.NoError(t, errs[sn], sn)
	}
}

// TestReadOnlyStandby: a database that only accepts reads (a standby, or
// a primary demoted during a failover) answers ErrUnavailable, and Ping
// says so.
func TestReadOnlyStandby(t *testing.T) {
	dsn := newDSN(t)
	exec(t, dsn, `ALTER DATABASE `+dbName(dsn)+` SET default_transaction_read_only = on`)
	s := newStore(t, postgres.Config{DSN: dsn, ConnectTimeout: time.Second})
	require.ErrorIs(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")}), storage.ErrUnavailable)
	require.ErrorIs(t, s.Ping(t.Context()), storage.ErrUnavailable)
	_, err := s.CountCertificates(t.Context())
	require.NoError(t, err, "reads still work")
}

func dbName(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}
