package integration

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// rotationTTL is the SVID TTL the rotation tests ask `lanyard dev` for:
// the agent renews at half-life ± 10 %, so every 2 s or so.
const rotationTTL = 4 * time.Second

// startRotatingDev starts `lanyard dev` whose agent asks for rotationTTL.
func startRotatingDev(t *testing.T) *harness.Dev {
	t.Helper()
	return harness.StartDev(t, harness.Options{Args: []string{"--svid-ttl=" + rotationTTL.String()}})
}

// TestWorkloadAPI: the official go-spiffe Workload API client against
// `lanyard dev`'s socket. The invoking user is attested (unix attestor) as
// default/default; the SVID verifies against bundle.pem; rotations reach
// a watcher with a new serial at about half-life; the bundle is served on
// its own; a call without the security header is refused.
func TestWorkloadAPI(t *testing.T) {
	t.Parallel()
	d := startRotatingDev(t)
	want := d.WorkloadID("default", "default")
	client := workloadClient(t, d.SocketPath())

	t.Run("FetchX509Context", func(t *testing.T) {
		x := fetchX509(t, client, harness.CallTimeout)
		svid := requireX509Context(t, x, d.Bundle(t), want)
		leaf := svid.Certificates[0]
		// Asked for rotationTTL; the CA backdates NotBefore 10 s.
		require.InDelta(t, rotationTTL.Seconds(), time.Until(leaf.NotAfter).Seconds(), rotationTTL.Seconds())
		require.True(t, d.HasCertificate(t, serial(leaf)), "served SVID %s has no record", serial(leaf))

		s, err := client.FetchX509SVID(harness.Context(t))
		require.NoError(t, err)
		require.Equal(t, want, s.ID)
	})

	t.Run("FetchX509Bundles", func(t *testing.T) {
		set, err := client.FetchX509Bundles(harness.Context(t))
		require.NoError(t, err)
		require.Equal(t, 1, set.Len())
		b, err := set.GetX509BundleForTrustDomain(d.TrustDomain)
		require.NoError(t, err)
		require.True(t, b.Equal(d.Bundle(t)), "bundle differs from bundle.pem")
	})

	t.Run("WatchX509Context sees rotations", func(t *testing.T) {
		w := watchX509(t, client)
		first := w.waitFor(t, harness.CallTimeout, "first update", func(u x509Update) bool { return u.svid != nil })
		requireSVID(t, first.svid, d.Bundle(t), want)
		prev := first
		for i := range 2 {
			next := w.waitFor(t, 3*rotationTTL, "rotation", func(u x509Update) bool {
				return u.at.After(prev.at) && serial(u.svid.Certificates[0]) != serial(prev.svid.Certificates[0])
			})
			requireSVID(t, next.svid, d.Bundle(t), want)
			leaf, old := next.svid.Certificates[0], prev.svid.Certificates[0]
			require.True(t, leaf.NotAfter.After(old.NotAfter), "rotated SVID does not outlive the previous one")
			require.NotEqual(t, old.PublicKey, leaf.PublicKey, "rotation kept the key")
			// Renewal at half-life ± 10 %, counted from receipt (NotAfter
			// has whole seconds, so the lifetime left is up to 1 s short of
			// the TTL); well before expiry; never a renewal loop.
			gap, half := next.at.Sub(prev.at), old.NotAfter.Sub(prev.at)/2
			t.Logf("rotation %d: serial %s → %s after %s (half of the lifetime left: %s)",
				i+1, serial(old), serial(leaf), gap.Round(time.Millisecond), half.Round(time.Millisecond))
			require.Greater(t, gap, half*9/10-100*time.Millisecond, "renewed before half-life")
			require.Less(t, gap, half*11/10+time.Second, "renewed late")
			require.True(t, next.at.Before(old.NotAfter), "renewed after the old SVID expired")
			prev = next
		}
	})

	t.Run("security header", func(t *testing.T) {
		api := workload.NewSpiffeWorkloadAPIClient(dialSocket(t, d.SocketPath()))
		for _, tt := range []struct {
			name string
			md   []string
			want codes.Code
		}{
			{name: "missing", want: codes.InvalidArgument},
			{name: "false", md: []string{"workload.spiffe.io", "false"}, want: codes.InvalidArgument},
			{name: "true", md: []string{"workload.spiffe.io", "true"}, want: codes.OK},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ctx := harness.Context(t)
				if tt.md != nil {
					ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
				}
				stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
				require.NoError(t, err)
				resp, err := stream.Recv()
				require.Equal(t, tt.want, status.Code(err), "FetchX509SVID: %v", err)
				if tt.want == codes.OK {
					require.Len(t, resp.GetSvids(), 1)
					require.Equal(t, want.String(), resp.GetSvids()[0].GetSpiffeId())
				} else {
					require.Contains(t, status.Convert(err).Message(), "security header")
				}
				bundles, err := api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
				require.NoError(t, err)
				_, err = bundles.Recv()
				require.Equal(t, tt.want, status.Code(err), "FetchX509Bundles: %v", err)
			})
		}
	})
}
