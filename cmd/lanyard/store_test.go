package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPostgresDSN: the DSN file (a mounted Secret) wins over
// $LANYARD_POSTGRES_DSN, which wins over the config's dsn.
func TestPostgresDSN(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dsn")
	require.NoError(t, os.WriteFile(file, []byte("postgres://from-file/db\n"), 0o600))
	for _, tt := range []struct {
		name string
		pc   PostgresConfig
		env  string
		want string
	}{
		{"config", PostgresConfig{DSN: "postgres://from-config/db"}, "", "postgres://from-config/db"},
		{"environment", PostgresConfig{DSN: "postgres://from-config/db"}, "postgres://from-env/db", "postgres://from-env/db"},
		{"file", PostgresConfig{DSN: "postgres://from-config/db", DSNFile: file}, "postgres://from-env/db", "postgres://from-file/db"},
		{"nothing: the PG* variables", PostgresConfig{}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LANYARD_POSTGRES_DSN", tt.env)
			got, err := postgresDSN(tt.pc)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	_, err := postgresDSN(PostgresConfig{DSNFile: filepath.Join(t.TempDir(), "missing")})
	require.Error(t, err)
}
