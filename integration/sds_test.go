package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
	"github.com/lanyard-id/lanyard/integration/harness"
)

// pushBudget is how soon after a rotation the SDS push must arrive.
const pushBudget = time.Second

// TestSDSPushOnRotation: an Envoy-like SDS client subscribed to default
// and ROOTCA on `lanyard dev`'s socket gets a push within pushBudget of
// each rotation. The rotation's time is taken from the CA's record of the
// new certificate (signed and recorded before the agent received it), so
// the measured latency is an upper bound of the agent's; a go-spiffe
// Workload API watcher on the same identity must see the same SVIDs
// within the same budget.
func TestSDSPushOnRotation(t *testing.T) {
	t.Parallel()
	d := startRotatingDev(t)
	want := d.WorkloadID("default", "default")
	bundle := d.Bundle(t)
	w := watchX509(t, workloadClient(t, d.SocketPath()))
	c := startSDS(t, dialSocket(t, d.SocketPath()), sdstest.Config{Names: []string{sdsDefault, sdsRootCA}})

	const rotations = 3
	type push struct {
		sdsResponse
		serial string
	}
	var pushes []push
	for len(pushes) <= rotations {
		r := nextFullSDS(t, c, 3*rotationTTL, sdsDefault, sdsRootCA)
		svid := sdsSVID(t, r.Response, sdsDefault, bundle, want)
		sdsRoots(t, r.Response, bundle)
		p := push{sdsResponse: r, serial: serial(svid.Certificates[0])}
		if n := len(pushes); n > 0 {
			// Only a new SVID is pushed: never the same content twice.
			require.NotEqual(t, pushes[n-1].Version, p.Version, "same version pushed again")
			require.NotEqual(t, pushes[n-1].serial, p.serial, "a push without a rotation")
		}
		pushes = append(pushes, p)
	}
	eventually(t, time.Second, "the last push ACKed", func() bool { return c.Acked() == pushes[rotations].Version })
	require.Equal(t, 1, c.Streams())

	var worst time.Duration
	for i, p := range pushes[1:] {
		issued := d.IssuedAt(t, p.serial)
		latency := p.at.Sub(issued)
		var wlAt time.Time
		eventually(t, 2*pushBudget, "the Workload API watcher sees "+p.serial, func() bool {
			var ok bool
			wlAt, ok = w.seen(p.serial)
			return ok
		})
		t.Logf("rotation %d: serial %s recorded by the CA at %s; SDS push after %s, Workload API update after %s",
			i+1, p.serial, issued.Format("15:04:05.000"), latency.Round(time.Millisecond), wlAt.Sub(issued).Round(time.Millisecond))
		require.Less(t, latency, pushBudget, "SDS push of rotation %d", i+1)
		require.Less(t, wlAt.Sub(issued), pushBudget, "Workload API update of rotation %d", i+1)
		worst = max(worst, latency)
	}
	t.Logf("worst SDS push latency over %d rotations: %s", rotations, worst.Round(time.Millisecond))
}

// TestSDS follows the xDS protocol against `lanyard dev`'s agent (SVIDs
// of 1h, so nothing rotates during the test): subscribe and ACK, change
// the subscription on a live stream, NACK without a resend loop, and a
// caller identified by its bearer token rather than by its uid.
func TestSDS(t *testing.T) {
	t.Parallel()
	d := harness.StartDev(t, harness.Options{})
	conn := dialSocket(t, d.SocketPath())
	bundle := d.Bundle(t)
	self := d.WorkloadID("default", "default")

	t.Run("subscribe and ACK", func(t *testing.T) {
		c := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault, sdsRootCA}})
		r := nextFullSDS(t, c, harness.CallTimeout, sdsDefault, sdsRootCA)
		require.Equal(t, []string{sdsDefault, sdsRootCA}, r.Names())
		require.NotEmpty(t, r.Version)
		require.NotEmpty(t, r.Nonce)
		svid := sdsSVID(t, r.Response, sdsDefault, bundle, self)
		require.True(t, d.HasCertificate(t, serial(svid.Certificates[0])))
		sdsRoots(t, r.Response, bundle)
		eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r.Version })
		requireNoSDS(t, c, 500*time.Millisecond, "an ACK is not answered")
	})

	t.Run("subscription change on a live stream", func(t *testing.T) {
		c := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault}})
		r1 := nextFullSDS(t, c, harness.CallTimeout, sdsDefault)
		svid := sdsSVID(t, r1.Response, sdsDefault, bundle, self)

		for _, tt := range []struct {
			name      string
			subscribe []string
			want      []string
		}{
			{name: "add ROOTCA", subscribe: []string{sdsDefault, sdsRootCA}, want: []string{sdsDefault, sdsRootCA}},
			{name: "drop default", subscribe: []string{sdsRootCA}, want: []string{sdsRootCA}},
			// Unknown names and another workload's identity are left out;
			// the stream stays up.
			{name: "unknown names", subscribe: []string{sdsRootCA, "no-such-secret", d.WorkloadID("shop", "api").String()}, want: []string{sdsRootCA}},
			{name: "own SPIFFE ID", subscribe: []string{self.String()}, want: []string{self.String()}},
		} {
			require.NoError(t, c.Subscribe(tt.subscribe...), tt.name)
			r := nextSDS(t, c, harness.CallTimeout)
			require.NoError(t, r.NACK, tt.name)
			require.Equal(t, tt.want, r.Names(), tt.name)
			require.NotEqual(t, r1.Nonce, r.Nonce, tt.name)
			for _, n := range tt.want {
				if n == sdsRootCA {
					sdsRoots(t, r.Response, bundle)
				} else {
					// The same SVID under every name: no new key per name.
					got := sdsSVID(t, r.Response, n, bundle, self)
					require.Equal(t, serial(svid.Certificates[0]), serial(got.Certificates[0]), tt.name)
				}
			}
			eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r.Version })
		}
		require.Equal(t, 1, c.Streams(), "the subscription changes opened new streams")
		require.NoError(t, c.Err())
	})

	t.Run("NACK is not retried", func(t *testing.T) {
		c := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault, sdsRootCA}})
		r1 := nextFullSDS(t, c, harness.CallTimeout, sdsDefault, sdsRootCA)
		eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r1.Version })
		pushes, nacks := d.AgentMetric(t, harness.MetricSDSPushes), d.AgentMetric(t, harness.MetricSDSNACKs)

		c.NACKNext("rejected by the test")
		require.NoError(t, c.Subscribe(sdsDefault))
		r2 := nextSDS(t, c, harness.CallTimeout)
		require.Error(t, r2.NACK, "the client did not NACK")
		require.Equal(t, []string{sdsDefault}, r2.Names())
		// The agent logs and counts the NACK and sends nothing more until
		// something changes: no resend loop.
		requireNoSDS(t, c, 2*time.Second, "after a NACK")
		require.Equal(t, r1.Version, c.Acked(), "the client's accepted version")
		require.Equal(t, nacks+1, d.AgentMetric(t, harness.MetricSDSNACKs), "NACKs counted")
		require.Equal(t, pushes+1, d.AgentMetric(t, harness.MetricSDSPushes), "pushes after the NACK")
		require.Equal(t, 1, strings.Count(d.Output(), `msg="client rejected secrets"`), "NACK log lines")

		// The stream is still usable: the next change is answered.
		require.NoError(t, c.Subscribe(sdsDefault, sdsRootCA))
		r3 := nextSDS(t, c, harness.CallTimeout)
		require.NoError(t, r3.NACK)
		eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r3.Version })
		require.Equal(t, 1, c.Streams())
	})

	t.Run("token-identified caller", func(t *testing.T) {
		// A projected token of shop/api on the dev node decides the
		// identity, whoever the socket peer is; the agent forwards it to the
		// CA with the CSR.
		tok := d.Token(t, "shop", "api", "--pod", "api-0", "--node", harness.DevNode)
		api := d.WorkloadID("shop", "api")
		c := startSDS(t, conn, sdstest.Config{Token: tok, Names: []string{sdsDefault, sdsRootCA, self.String()}})
		// The uid's identity is not the token caller's to have: left out.
		r := nextFullSDS(t, c, harness.CallTimeout, sdsDefault, sdsRootCA)
		svid := sdsSVID(t, r.Response, sdsDefault, bundle, api)
		sdsRoots(t, r.Response, bundle)
		require.True(t, d.HasCertificate(t, serial(svid.Certificates[0])))

		// Without the token, the same peer is its attested self.
		c2 := startSDS(t, conn, sdstest.Config{Names: []string{sdsDefault}})
		r2 := nextFullSDS(t, c2, harness.CallTimeout, sdsDefault)
		got := sdsSVID(t, r2.Response, sdsDefault, bundle, self)
		require.NotEqual(t, svid.PrivateKey.Public(), got.PrivateKey.Public())
	})
}

// TestSDSReconnect: an SDS stream survives a restart of the agent (here
// `lanyard dev`, which runs it, on the same directory and socket): the
// client reconnects as Envoy does, opens a new stream with its last
// accepted version and gets the current secrets again.
func TestSDSReconnect(t *testing.T) {
	t.Parallel()
	d := harness.StartDev(t, harness.Options{})
	bundle := d.Bundle(t)
	self := d.WorkloadID("default", "default")
	c := startSDS(t, dialSocket(t, d.SocketPath()), sdstest.Config{
		Names: []string{sdsDefault, sdsRootCA}, Reconnect: 100 * time.Millisecond,
	})
	r1 := nextFullSDS(t, c, harness.CallTimeout, sdsDefault, sdsRootCA)
	before := sdsSVID(t, r1.Response, sdsDefault, bundle, self)
	eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r1.Version })

	require.NoError(t, d.Stop(), "lanyard dev did not exit cleanly")
	start := time.Now()
	d2 := d.Restart(t)
	r2 := nextFullSDS(t, c, harness.CallTimeout, sdsDefault, sdsRootCA)
	t.Logf("secrets again %s after the restart began (%d streams)", time.Since(start).Round(time.Millisecond), c.Streams())
	require.GreaterOrEqual(t, c.Streams(), 2, "no new stream")
	after := sdsSVID(t, r2.Response, sdsDefault, d2.Bundle(t), self)
	sdsRoots(t, r2.Response, bundle)
	eventually(t, time.Second, "ACK", func() bool { return c.Acked() == r2.Version })
	t.Logf("before the restart %s, after %s", serial(before.Certificates[0]), serial(after.Certificates[0]))
}
