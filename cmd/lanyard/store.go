package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/storage"
	"github.com/lanyard-id/lanyard/storage/postgres"
	"github.com/lanyard-id/lanyard/storage/sqlite"
)

func buildStore(ctx context.Context, cfg FileConfig, log *slog.Logger) (storage.Store, error) {
	switch cfg.Store.Type {
	case "", "sqlite":
		path := cfg.Store.SQLite.Path
		if path == "" {
			path = filepath.Join(cfg.DataDir, "lanyard.db")
		}
		return sqlite.New(ctx, sqlite.Config{Path: path, Logger: log.With("component", "store")})
	case "postgres":
		pc := cfg.Store.Postgres
		dsn, err := postgresDSN(pc)
		if err != nil {
			return nil, err
		}
		return postgres.New(ctx, postgres.Config{
			DSN: dsn, MaxConns: pc.MaxConns, StatementTimeout: pc.StatementTimeout,
			SSLMode: pc.SSLMode, SSLRootCert: pc.CAFile, Logger: log.With("component", "store"),
		})
	default:
		return nil, fmt.Errorf("store type %q: want sqlite or postgres", cfg.Store.Type)
	}
}

// postgresDSN is the DSN from, in order: dsnFile, $LANYARD_POSTGRES_DSN,
// dsn. Empty is allowed: the PG* variables may say everything.
func postgresDSN(pc PostgresConfig) (string, error) {
	if pc.DSNFile != "" {
		b, err := os.ReadFile(pc.DSNFile)
		if err != nil {
			return "", fmt.Errorf("store: read postgres DSN file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if v := os.Getenv("LANYARD_POSTGRES_DSN"); v != "" {
		return v, nil
	}
	return pc.DSN, nil
}

// buildRetention prunes expired certificate records of st and counts them
// in lanyard_ca_store_pruned_total.
func buildRetention(cfg FileConfig, st storage.Store, reg prometheus.Registerer, log *slog.Logger) (*storage.Retention, error) {
	p, ok := st.(storage.Pruner)
	if !ok {
		return nil, fmt.Errorf("store %T cannot prune", st)
	}
	pruned := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lanyard_ca_store_pruned_total",
		Help: "Expired certificate records deleted by retention.",
	})
	reg.MustRegister(pruned)
	r := cfg.Store.Retention
	return storage.NewRetention(storage.RetentionConfig{
		Store: p, Keep: r.Keep, Interval: r.Interval, BatchSize: r.BatchSize,
		Logger: log.With("component", "retention"), OnPrune: func(n int) { pruned.Add(float64(n)) },
	})
}

// sharedBundle is the store's shared trust bundle, nil for a store of one
// replica (a typed nil would not compare equal to nil in the interface).
func sharedBundle(st storage.Store) ca.SharedBundle {
	if pg, ok := st.(*postgres.Store); ok {
		return pg
	}
	return nil
}

// buildBundleSync keeps the authority's bundle equal to the one replicas
// share in a PostgreSQL store (LISTEN/NOTIFY, re-read every 5 s); nil for
// SQLite.
func buildBundleSync(st storage.Store, a *ca.Authority, log *slog.Logger) (*ca.BundleSync, error) {
	pg, ok := st.(*postgres.Store)
	if !ok {
		return nil, nil
	}
	return ca.NewBundleSync(ca.BundleSyncConfig{
		Authority: a, Store: pg, Watch: pg.WatchBundles, Logger: log.With("component", "bundle"),
	})
}

func buildUpstream(ctx context.Context, cfg FileConfig, td spiffeid.TrustDomain, st storage.Store, log *slog.Logger) (upstream.Authority, error) {
	switch cfg.Upstream.Type {
	case "", "selfsigned":
		if pg, ok := st.(*postgres.Store); ok {
			// Replicas share one root, kept sealed in the store.
			if cfg.Upstream.SelfSigned.SealKeyFile == "" {
				return nil, errors.New("upstream selfsigned with store postgres needs upstream.selfsigned.sealKeyFile")
			}
			return upstream.NewSharedSelfSigned(ctx, upstream.SharedSelfSignedConfig{
				Store: pg, SealKeyFile: cfg.Upstream.SelfSigned.SealKeyFile, TrustDomain: td.Name(),
				Logger: log.With("component", "upstream"),
			})
		}
		return upstream.NewSelfSigned(upstream.SelfSignedConfig{
			Dir: filepath.Join(cfg.DataDir, "root"), TrustDomain: td.Name(), Logger: log.With("component", "upstream"),
		})
	case "disk":
		d := cfg.Upstream.Disk
		return upstream.NewDisk(upstream.DiskConfig{CertFile: d.CertFile, KeyFile: d.KeyFile, BundleFile: d.BundleFile})
	case "vault":
		return buildVaultUpstream(cfg.Upstream.Vault, log.With("component", "upstream", "upstream", "vault"))
	default:
		return nil, fmt.Errorf("upstream type %q: want selfsigned, disk or vault", cfg.Upstream.Type)
	}
}
