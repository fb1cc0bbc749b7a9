package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main starts a Server for the test binary, passes it to set, runs the
// tests and stops the server. Call it from TestMain:
//
//	var pg *pgtest.Server
//
//	func TestMain(m *testing.M) { pgtest.Main(m, func(s *pgtest.Server) { pg = s }) }
//
// A missing PostgreSQL fails the binary: these tests are never skipped.
func Main(m *testing.M, set func(*Server)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	s, err := Start(ctx, Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	set(s)
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// NewDatabase creates a database from template (made once by Template) for
// t, drops it in t.Cleanup, and returns its DSN.
func (s *Server) NewDatabase(t testing.TB, template string) string {
	t.Helper()
	name, err := s.CreateDatabase(t.Context(), template)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.DropDatabase(context.Background(), name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return s.DSN(name)
}
