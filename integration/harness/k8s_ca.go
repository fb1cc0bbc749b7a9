package harness

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// CAOptions configures StartCA.
type CAOptions struct {
	// Config is the YAML configuration of `lanyard ca` (see
	// cmd/lanyard/config.go) as nested maps and slices (durations as
	// strings such as "4s"): clusters, agents, policy... StartCA sets listenAddr, httpAddr, dataDir and bundleFile
	// over it, trustDomain unless given (cluster.local), and log.level
	// debug unless a log section is given.
	Config map[string]any
	// StartTimeout bounds the wait for /readyz and the bundle file
	// (default 30s); StopGrace is how long Stop waits after SIGTERM
	// before SIGKILL (default StopGrace).
	StartTimeout time.Duration
	StopGrace    time.Duration
}

// CA is a running `lanyard ca` process, started from a YAML file as in
// production (no dev mode, no development issuer).
type CA struct {
	process
	// Dir is the data directory (root, SQLite store, bundle.pem).
	Dir         string
	TrustDomain spiffeid.TrustDomain
	// GRPCAddr and HTTPAddr are its 127.0.0.1 addresses.
	GRPCAddr, HTTPAddr string
	// ConfigPath is the YAML file it was started with.
	ConfigPath string
}

// StartCA writes opts.Config to a file, starts `lanyard ca --config` on
// free 127.0.0.1 ports in its own process group, waits until /readyz
// answers 200 and the bundle file exists, and stops it when the test ends
// (its output is logged if the test failed; a CA that exits on its own
// fails the test).
func StartCA(t testing.TB, opts CAOptions) *CA {
	t.Helper()
	bin := Binary(t)
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = StopGrace
	}
	dir, logDir := t.TempDir(), t.TempDir()
	const attempts = 3
	for i := 1; ; i++ {
		c, err := startCA(t, bin, dir, logDir, opts)
		if err == nil {
			return c
		}
		if i < attempts && c.cmd != nil && c.lostPortRace() {
			t.Logf("harness: lanyard ca lost a port race, retrying: %v", err)
			continue
		}
		t.Fatalf("harness: start lanyard ca: %v (its output follows)", err) // logged by the cleanup
	}
}

func startCA(t testing.TB, bin, dir, logDir string, opts CAOptions) (*CA, error) {
	c := &CA{Dir: dir}
	c.name = "lanyard ca"
	c.grace = opts.StopGrace
	addrs, err := freeAddrs(2)
	if err != nil {
		return c, err
	}
	c.GRPCAddr, c.HTTPAddr = addrs[0], addrs[1]
	cfg := make(map[string]any, len(opts.Config)+6)
	for k, v := range opts.Config {
		cfg[k] = v
	}
	if _, ok := cfg["trustDomain"]; !ok {
		cfg["trustDomain"] = DefaultTrustDomain
	}
	if _, ok := cfg["log"]; !ok {
		cfg["log"] = map[string]any{"level": "debug"}
	}
	cfg["listenAddr"], cfg["httpAddr"] = c.GRPCAddr, c.HTTPAddr
	cfg["dataDir"], cfg["bundleFile"] = dir, filepath.Join(dir, BundleFile)
	td, err := spiffeid.TrustDomainFromString(fmt.Sprint(cfg["trustDomain"]))
	if err != nil {
		return c, fmt.Errorf("trust domain: %w", err)
	}
	c.TrustDomain = td
	// JSON is YAML: no YAML library for the modules that share the harness.
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c.ConfigPath = filepath.Join(logDir, "lanyard-ca.yaml")
	if err := os.WriteFile(c.ConfigPath, raw, 0o600); err != nil {
		return c, err
	}
	logFile, err := os.CreateTemp(logDir, "lanyard-ca-*.log")
	if err != nil {
		return c, err
	}
	defer logFile.Close() // the child has its own descriptor
	if err := c.start(bin, []string{"ca", "--config", c.ConfigPath}, nil, logFile); err != nil {
		return c, err
	}
	c.cleanup(t, c.GRPCAddr+", config "+c.ConfigPath)
	if err := c.ready(c.HTTPAddr, opts.StartTimeout, func() error {
		_, err := os.Stat(c.BundlePath())
		return err
	}); err != nil {
		c.Stop()
		return c, err
	}
	return c, nil
}

// BundlePath is the bundle file the CA keeps current.
func (c *CA) BundlePath() string { return filepath.Join(c.Dir, BundleFile) }

// Bundle loads the trust bundle from the bundle file.
func (c *CA) Bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	return LoadBundle(t, c.TrustDomain, c.BundlePath())
}

// CAID is the SPIFFE ID the CA's serving certificate must carry.
func (c *CA) CAID() spiffeid.ID { return spiffeid.RequireFromSegments(c.TrustDomain, "lanyard", "ca") }

// AgentID is the SPIFFE ID of the agent on node of cluster.
func (c *CA) AgentID(cluster, node string) spiffeid.ID {
	return spiffeid.RequireFromSegments(c.TrustDomain, "lanyard", "agent", cluster, node)
}

// WorkloadID is the SPIFFE ID of service account ns/sa.
func (c *CA) WorkloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(c.TrustDomain, "ns", ns, "sa", sa)
}

// Client dials the CA over TLS without a client certificate, verifying its
// certificate against the bundle and its SPIFFE ID.
func (c *CA) Client(t testing.TB) cav1.CAServiceClient {
	t.Helper()
	return dialCA(t, c.GRPCAddr, tlsconfig.TLSClientConfig(c.Bundle(t), tlsconfig.AuthorizeID(c.CAID())))
}

// DialAgent dials the CA over mTLS presenting svid.
func (c *CA) DialAgent(t testing.TB, svid *x509svid.SVID) cav1.CAServiceClient {
	t.Helper()
	return dialCA(t, c.GRPCAddr, tlsconfig.MTLSClientConfig(svid, c.Bundle(t), tlsconfig.AuthorizeID(c.CAID())))
}

// AttestAgent sends AttestAgent for cluster with token and csr. On success
// it returns the agent SVID (with csr's key); otherwise the RPC's status
// error.
func (c *CA) AttestAgent(t testing.TB, cluster, token string, csr *CSR) (*x509svid.SVID, error) {
	t.Helper()
	resp, err := c.Client(t).AttestAgent(Context(t), &cav1.AttestAgentRequest{Token: token, Cluster: cluster, Csr: csr.DER})
	if err != nil {
		return nil, err
	}
	return csr.SVID(t, resp.GetSvid()), nil
}

// Metric scrapes /metrics (see Dev.Metric).
func (c *CA) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return scrapeMetric(t, c.HTTPAddr, name, labels)
}

func dialCA(t testing.TB, addr string, tc *tls.Config) cav1.CAServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatalf("harness: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCAServiceClient(conn)
}
