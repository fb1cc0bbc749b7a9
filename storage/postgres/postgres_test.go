package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/internal/pgtest"
	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/postgres"
	"github.com/lanyard-id/lanyard/storage/storagetest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { pgtest.Main(m, func(s *pgtest.Server) { pg = s }) }

const template = "lanyard_template"

// newDSN returns the DSN of a new, migrated database for t.
func newDSN(t *testing.T) string {
	t.Helper()
	require.NoError(t, pg.Template(t.Context(), template, func(ctx context.Context, dsn string) error {
		s, err := postgres.New(ctx, postgres.Config{DSN: dsn})
		if err != nil {
			return err
		}
		return s.Close()
	}))
	return pg.NewDatabase(t, template)
}

func newStore(t *testing.T, cfg postgres.Config) *postgres.Store {
	t.Helper()
	if cfg.DSN == "" {
		cfg.DSN = newDSN(t)
	}
	s, err := postgres.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t, postgres.Config{}) })
}
