package integration

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Load during a restart: batches always in flight when the signal comes.
const loadWorkers, loadBatch = 4, 64

// TestRestart: a dev CA stopped with SIGTERM (exiting cleanly) or killed
// with SIGKILL while agents keep asking for certificates, and started again
// on the same directory, keeps its root (bundle.pem unchanged), its issuer
// key and the record of every certificate it returned; SVIDs issued before
// still verify and the agent SVID still authenticates.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		stop func(t *testing.T, d *harness.Dev)
		// graceful: requests the CA accepted before SIGTERM are answered
		// as if it were not stopping (no entry refused Unavailable).
		graceful bool
	}{
		{name: "SIGTERM under load", graceful: true, stop: func(t *testing.T, d *harness.Dev) {
			require.NoError(t, d.Stop(), "lanyard dev did not exit cleanly on SIGTERM")
		}},
		{name: "SIGKILL under load", stop: func(t *testing.T, d *harness.Dev) { d.Kill() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d1, a := startDev(t)
			tok := workloadToken(t, d1, a, "default", "default")
			csr := harness.NewCSR(t, harness.CSROptions{})
			old := requireSigned(t, d1, signOne(t, a, entry("before", tok, csr.DER, 0)), csr, d1.WorkloadID("default", "default"))
			bundleBefore, err := os.ReadFile(d1.BundlePath())
			require.NoError(t, err)

			l := startLoad(t, []*harness.Agent{a}, tok, loadWorkers, loadBatch, 0)
			l.waitIssued(t, 2*loadWorkers*loadBatch)
			tt.stop(t, d1)
			require.False(t, d1.Running())
			l.stop()
			serials := append(l.issued(), old.Certificates[0].SerialNumber.Text(16))
			t.Logf("%d certificates returned before the stop; entries refused: %v; the load ended with %v",
				len(serials), l.refused(), l.errors())
			if tt.graceful {
				// The calls in flight at SIGTERM must complete: the store
				// writer may close only after the gRPC server has drained.
				// Not fatal: the restart checks below still run.
				assert.Empty(t, l.refused(), "entries of calls in flight at SIGTERM were refused")
			}

			d2 := harness.StartDev(t, harness.Options{Dir: d1.Dir})
			bundleAfter, err := os.ReadFile(d2.BundlePath())
			require.NoError(t, err)
			require.Equal(t, string(bundleBefore), string(bundleAfter), "bundle.pem changed across a restart")
			got, err := d2.Client(t).GetBundle(harness.Context(t), &cav1.GetBundleRequest{})
			require.NoError(t, err)
			require.Equal(t, roots(d2.Bundle(t)), got.GetBundle().GetX509Authorities())

			require.GreaterOrEqual(t, d2.CertificateCount(t), len(serials), "records lost across a restart")
			require.Empty(t, d2.MissingCertificates(t, serials), "certificates returned before the stop have no record")
			requireVerifies(t, old.Certificates, d2.Bundle(t), d2.WorkloadID("default", "default"))

			// The agent SVID from before still authenticates, and the
			// workload token from before is still accepted (same issuer key).
			a2 := &harness.Agent{Node: a.Node, SVID: a.SVID, Client: d2.DialAgent(t, a.SVID)}
			before := issued(t, d2)
			csr = harness.NewCSR(t, harness.CSROptions{})
			fresh := requireSigned(t, d2, signOne(t, a2, entry("after", tok, csr.DER, 0)), csr, d2.WorkloadID("default", "default"))
			requireVerifies(t, fresh.Certificates, harness.LoadBundle(t, d1.TrustDomain, d1.BundlePath()), d2.WorkloadID("default", "default"))
			require.Equal(t, before.plus(1), issued(t, d2))

			// A new agent attests against the restarted CA.
			d2.NewAgent(t, "node-new")
		})
	}
}

// shutdownBudget is how long a CA may take to exit after SIGTERM when no
// request is in flight. Open WatchBundle streams (every agent keeps one)
// must not hold it up: they end with Unavailable so that agents reconnect
// to another replica.
const shutdownBudget = 2 * time.Second

// TestShutdown: SIGTERM stops the CA promptly and cleanly, with and
// without agents watching the bundle.
func TestShutdown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		watchers int
	}{
		{name: "idle"},
		{name: "agents watching the bundle", watchers: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A long grace, so that a slow exit is measured, not killed.
			d := harness.StartDev(t, harness.Options{StopGrace: 15 * time.Second})
			a := d.NewAgent(t, "node-a")
			ended := make(chan error, tt.watchers)
			for range tt.watchers {
				stream, err := a.Client.WatchBundle(t.Context(), &cav1.WatchBundleRequest{})
				require.NoError(t, err)
				_, err = stream.Recv()
				require.NoError(t, err)
				go func() {
					for {
						if _, err := stream.Recv(); err != nil {
							ended <- err
							return
						}
					}
				}()
			}

			start := time.Now()
			err := d.Stop()
			took := time.Since(start)
			require.NoError(t, err, "exit after SIGTERM")
			for range tt.watchers {
				select {
				case err := <-ended:
					require.Equal(t, codes.Unavailable, status.Code(err), "watch stream ended with %v", err)
				case <-time.After(5 * time.Second):
					t.Fatal("a WatchBundle stream outlived the CA")
				}
			}
			require.Less(t, took, shutdownBudget, "SIGTERM to exit took %s", took)
		})
	}
}
