package postgres_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/postgres"
)

var t0 = time.Date(2031, time.March, 14, 15, 9, 26, 535897932, time.UTC)

func rec(serial string) storage.CertificateRecord {
	return storage.CertificateRecord{
		Serial: serial, SPIFFEID: "spiffe://cluster.local/ns/default/sa/web", Kind: "workload",
		NotBefore: t0, NotAfter: t0.Add(time.Hour), IssuedAt: t0, SHA256: []byte{1, 2, 3},
	}
}

func exec(t *testing.T, dsn, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

func TestSchemaTooNewRefused(t *testing.T) {
	dsn := newDSN(t)
	exec(t, dsn, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`)
	s, err := postgres.New(t.Context(), postgres.Config{DSN: dsn})
	require.ErrorIs(t, err, storage.ErrSchemaTooNew)
	require.Nil(t, s)
}

// TestReplicasStartTogether: several replicas migrating an empty database
// at once take turns under the advisory lock; each migration runs once.
func TestReplicasStartTogether(t *testing.T) {
	name, err := pg.CreateDatabase(t.Context(), "")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pg.DropDatabase(context.Background(), name) })
	dsn := pg.DSN(name)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := postgres.New(t.Context(), postgres.Config{DSN: dsn, Replica: fmt.Sprint("r", i)})
			if err == nil {
				err = s.Ping(t.Context())
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT COUNT(*) FROM goose_db_version WHERE version_id = 1`).Scan(&n))
	require.Equal(t, 1, n)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT COUNT(*) FROM heartbeat`).Scan(&n))
	require.Equal(t, 4, n, "one heartbeat row per replica")
}

func TestSessionSettings(t *testing.T) {
	dsn := newDSN(t)
	s := newStore(t, postgres.Config{DSN: dsn, StatementTimeout: 1234 * time.Millisecond})
	for _, tt := range []struct{ setting, want string }{
		{"synchronous_commit", "on"},
		{"statement_timeout", "1234ms"},
		{"application_name", "lanyard"},
	} {
		got, err := postgres.ShowSetting(t.Context(), s, tt.setting)
		require.NoError(t, err)
		require.Equal(t, tt.want, got, tt.setting)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		_, err = postgres.New(t.Context(), postgres.Config{
			DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", port), ConnectTimeout: time.Second,
		})
		require.ErrorIs(t, err, storage.ErrUnavailable)
	})
	t.Run("malformed DSN", func(t *testing.T) {
		_, err := postgres.New(t.Context(), postgres.Config{DSN: "postgres://a:secret@[::1"})
		require.ErrorIs(t, err, storage.ErrInvalidArgument)
		require.NotContains(t, err.Error(), "secret")
	})
	t.Run("statement timeout", func(t *testing.T) {
		dsn := newDSN(t)
		s := newStore(t, postgres.Config{DSN: dsn, StatementTimeout: 100 * time.Millisecond})
		conn, err := pgx.Connect(t.Context(), dsn)
		require.NoError(t, err)
		defer conn.Close(context.Background())
		tx, err := conn.Begin(t.Context())
		require.NoError(t, err)
		_, err = tx.Exec(t.Context(), `LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE`)
		require.NoError(t, err)
		err = s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")})
		require.ErrorIs(t, err, storage.ErrUnavailable)
		require.NoError(t, tx.Rollback(t.Context()))
		require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")}))
	})
}

// TestRecoversAfterRestart: while the server is down every call answers
// ErrUnavailable quickly; the pool reconnects by itself once it is back.
func TestRecoversAfterRestart(t *testing.T) {
	s := newStore(t, postgres.Config{ConnectTimeout: time.Second})
	require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a1")}))
	require.NoError(t, pg.Pause(t.Context()))
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = pg.Resume(context.Background())
		}
	})
	for _, call := range []func(ctx context.Context) error{
		s.Ping,
		func(ctx context.Context) error {
			return s.RecordCertificates(ctx, []storage.CertificateRecord{rec("a2")})
		},
		func(ctx context.Context) error { _, err := s.GetCertificate(ctx, "a1"); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		start := time.Now()
		err := call(ctx)
		cancel()
		require.ErrorIs(t, err, storage.ErrUnavailable)
		require.Less(t, time.Since(start), 3*time.Second)
	}
	require.NoError(t, pg.Resume(t.Context()))
	resumed = true
	require.Eventually(t, func() bool { return s.Ping(t.Context()) == nil }, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, s.RecordCertificates(t.Context(), []storage.CertificateRecord{rec("a2")}))
	_, err := s.GetCertificate(t.Context(), "a1")
	require.NoError(t, err, "records committed before the restart are kept")
}

func TestTLSSettings(t *testing.T) {
	ca := "/etc/lanyard/db-ca.pem"
	for _, dsn := range []string{"postgres://u@db.example:5432/lanyard", "host=db.example user=u dbname=lanyard", ""} {
		got := postgres.WithParams(dsn, map[string]string{"sslmode": "verify-full", "sslrootcert": ca})
		if u, err := url.Parse(got); err == nil && u.Scheme == "postgres" {
			require.Equal(t, "verify-full", u.Query().Get("sslmode"), got)
			require.Equal(t, ca, u.Query().Get("sslrootcert"), got)
			continue
		}
		require.Contains(t, got, "sslmode='verify-full'")
		require.Contains(t, got, "sslrootcert='"+ca+"'")
	}
	require.Equal(t, "host=x", postgres.WithParams("host=x", map[string]string{"sslmode": ""}))
	t.Run("verify-full refuses a server without TLS", func(t *testing.T) {
		dir := t.TempDir()
		caFile := dir + "/ca.pem"
		require.NoError(t, os.WriteFile(caFile, selfSignedPEM(t), 0o600))
		_, err := postgres.New(t.Context(), postgres.Config{DSN: pg.DSN("postgres"), SSLMode: "verify-full", SSLRootCert: caFile})
		require.ErrorIs(t, err, storage.ErrUnavailable)
	})
}

func selfSignedPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db ca"},
		NotBefore: t0.Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
