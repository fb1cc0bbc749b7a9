// Package bundlefile keeps a PEM file equal to the CA's trust bundle, for
// clients that read their trust anchors from disk (the dev mode's
// bundle.pem, a bootstrap bundle mounted into agents).
package bundlefile

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"time"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/internal/atomicfile"
)

// Bundler publishes the trust bundle (*ca.Authority).
type Bundler interface {
	Bundle() *ca.Bundle
	BundleChanged() <-chan struct{}
}

// Config configures a Writer.
type Config struct {
	// Path of the PEM file (0644, written atomically). Required.
	Path    string
	Bundler Bundler
	// Retry is how soon a failed write is tried again (default 2s).
	Retry  time.Duration
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
}

// Writer rewrites the file on every bundle change.
type Writer struct{ cfg Config }

// New validates cfg and fills defaults.
func New(cfg Config) (*Writer, error) {
	if cfg.Path == "" || cfg.Bundler == nil {
		return nil, errors.New("bundle file: path and bundler are required")
	}
	if cfg.Retry == 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{cfg: cfg}, nil
}

// Run writes the bundle now and after every change until ctx ends; it
// returns nil then. A failed write is logged and tried again.
func (w *Writer) Run(ctx context.Context) error {
	var written int64 = -1
	for {
		changed := w.cfg.Bundler.BundleChanged()
		var retry <-chan time.Time
		if b := w.cfg.Bundler.Bundle(); b.Sequence != written && len(b.Roots) > 0 {
			if err := Write(w.cfg.Path, b.Roots); err != nil {
				w.cfg.Logger.Error("write bundle file", "path", w.cfg.Path, "error", err)
				retry = w.cfg.After(w.cfg.Retry)
			} else {
				written = b.Sequence
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry:
		}
	}
}

// Write writes roots as PEM to path atomically (0644).
func Write(path string, roots []*x509.Certificate) error {
	var data []byte
	for _, r := range roots {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return atomicfile.Write(path, data, 0o644)
}
