// Package health is the CA's HTTP side: /healthz (the process runs),
// /readyz (the CA can sign and record), /metrics (Prometheus) and, when
// turned on, /debug/pprof.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the HTTP server.
type Config struct {
	// Addr to listen on (default ":9090").
	Addr string
	// Ready is nil when the CA can serve (*server.Server's Ready).
	// Required.
	Ready func(context.Context) error
	// Gatherer is what /metrics serves. Required.
	Gatherer prometheus.Gatherer
	// Profiling serves net/http/pprof under /debug/pprof/ (off by
	// default: it exposes internals).
	Profiling bool
}

// Server serves the HTTP endpoints.
type Server struct {
	lis  net.Listener
	http *http.Server
}

// New validates cfg and binds the listener.
func New(cfg Config) (*Server, error) {
	if cfg.Ready == nil || cfg.Gatherer == nil {
		return nil, errors.New("health: ready check and gatherer are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":9090"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	if cfg.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	return &Server{lis: lis, http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close releases the listener of a server that will not Run.
func (s *Server) Close() error { return s.lis.Close() }

// Run serves until ctx ends, then shuts down within 5 s.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(shCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
