package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// TestSignSVID: an attested agent gets workload SVIDs for every allowed key
// type, with the default, a requested or the maximum TTL; each is recorded
// before it is returned; a TTL over the maximum is refused.
func TestSignSVID(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	want := d.WorkloadID("default", "default")
	tok := workloadToken(t, d, a, "default", "default")

	for _, tt := range []struct {
		name string
		csr  harness.CSROptions
		ttl  time.Duration
		// wantTTL is the leaf's lifetime; 0 means "up to the intermediate's
		// NotAfter" (a request for the maximum TTL).
		wantTTL  time.Duration
		wantCode codes.Code
	}{
		{name: "P-256 default TTL", csr: harness.CSROptions{Key: harness.P256}, wantTTL: defaultTTL},
		{name: "P-384", csr: harness.CSROptions{Key: harness.P384}, wantTTL: defaultTTL},
		{name: "Ed25519", csr: harness.CSROptions{Key: harness.Ed25519}, wantTTL: defaultTTL},
		{name: "RSA-2048", csr: harness.CSROptions{Key: harness.RSA(2048)}, wantTTL: defaultTTL},
		{name: "RSA-3072", csr: harness.CSROptions{Key: harness.RSA(3072)}, wantTTL: defaultTTL},
		{name: "URI SAN equal to the caller's ID", csr: harness.CSROptions{URIs: []string{want.String()}}, wantTTL: defaultTTL},
		{name: "requested TTL 10m is honoured", ttl: 10 * time.Minute, wantTTL: 10 * time.Minute},
		{name: "requested TTL 1s is honoured", ttl: time.Second, wantTTL: time.Second},
		{name: "maximum TTL 24h is allowed, capped by the intermediate", ttl: maxTTL},
		{name: "TTL 25h is over the maximum", ttl: 25 * time.Hour, wantCode: codes.InvalidArgument},
		{name: "TTL 24h1s is over the maximum", ttl: maxTTL + time.Second, wantCode: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := issued(t, d)
			csr := harness.NewCSR(t, tt.csr)
			start := time.Now()
			res := signOne(t, a, entry(tt.name, tok, csr.DER, tt.ttl))
			if tt.wantCode != codes.OK {
				require.Equal(t, tt.wantCode, codes.Code(res.GetCode()), "result code (message %q)", res.GetMessage())
				require.Nil(t, res.GetSvid())
				require.Equal(t, before, issued(t, d), "a refused request left a record")
				return
			}
			svid := requireSigned(t, d, res, csr, want)
			leaf := svid.Certificates[0]
			if tt.wantTTL != 0 {
				requireTTL(t, leaf, start, tt.wantTTL)
			} else {
				intermediate := svid.Certificates[len(svid.Certificates)-1]
				require.False(t, leaf.NotAfter.After(intermediate.NotAfter), "leaf outlives its issuer")
				require.Greater(t, leaf.NotAfter.Sub(start), maxTTL-5*time.Minute, "leaf lifetime")
			}
			require.True(t, d.HasCertificate(t, leaf.SerialNumber.Text(16)), "issued certificate %x is not in the store", leaf.SerialNumber)
			require.Equal(t, before.plus(1), issued(t, d))
		})
	}
}

// TestAttestAgent: a token of the agent service account bound to a pod on a
// node gets spiffe://<td>/lanyard/agent/<cluster>/<node> for the agent TTL,
// with the trust bundle, recorded; the agent SVID then works for mTLS.
func TestAttestAgent(t *testing.T) {
	t.Parallel()
	d := harness.StartDev(t, harness.Options{})
	for _, tt := range []struct {
		key  harness.KeyType
		node string
	}{
		{key: harness.P256, node: "node-p256"},
		{key: harness.P384, node: "node-p384"},
		{key: harness.Ed25519, node: "node-ed25519"},
		{key: harness.RSA(2048), node: "node-rsa"},
	} {
		t.Run(tt.key.Name, func(t *testing.T) {
			key, node := tt.key, tt.node
			before := issued(t, d)
			csr := harness.NewCSR(t, harness.CSROptions{Key: key})
			start := time.Now()
			svid, resp, err := d.AttestAgent(t, d.AgentToken(t, node), csr)
			require.NoError(t, err)
			require.Equal(t, d.AgentID(node), svid.ID)
			requireVerifies(t, svid.Certificates, d.Bundle(t), d.AgentID(node))
			requireTTL(t, svid.Certificates[0], start, agentTTL)
			require.Equal(t, d.TrustDomain.Name(), resp.GetBundle().GetTrustDomain())
			require.Equal(t, roots(d.Bundle(t)), resp.GetBundle().GetX509Authorities())
			require.True(t, d.HasCertificate(t, svid.Certificates[0].SerialNumber.Text(16)))
			require.Equal(t, before.plus(1), issued(t, d))

			// The agent SVID authenticates BatchSignSVIDs.
			c := d.DialAgent(t, svid)
			csr = harness.NewCSR(t, harness.CSROptions{})
			tok := d.Token(t, "default", "default", "--pod", "web-0", "--node", node)
			resp2, err := c.BatchSignSVIDs(harness.Context(t), &cav1.BatchSignSVIDsRequest{
				Requests: []*cav1.SVIDRequest{entry("1", tok, csr.DER, 0)},
			})
			require.NoError(t, err)
			requireSigned(t, d, resp2.GetResults()[0], csr, d.WorkloadID("default", "default"))
		})
	}
}

// TestBundle: GetBundle and the first WatchBundle message carry exactly the
// roots of bundle.pem.
func TestBundle(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	want := roots(d.Bundle(t))
	require.NotEmpty(t, want)

	for _, tt := range []struct {
		name   string
		client cav1.CAServiceClient
	}{
		{name: "agent mTLS", client: a.Client},
		{name: "server-authenticated TLS", client: d.Client(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.client.GetBundle(harness.Context(t), &cav1.GetBundleRequest{})
			require.NoError(t, err)
			require.Equal(t, d.TrustDomain.Name(), got.GetBundle().GetTrustDomain())
			require.Equal(t, want, got.GetBundle().GetX509Authorities())
			require.Positive(t, got.GetBundle().GetRefreshHint().AsDuration())

			stream, err := tt.client.WatchBundle(harness.Context(t), &cav1.WatchBundleRequest{})
			require.NoError(t, err)
			first, err := stream.Recv()
			require.NoError(t, err)
			require.Equal(t, d.TrustDomain.Name(), first.GetBundle().GetTrustDomain())
			require.Equal(t, want, first.GetBundle().GetX509Authorities())
			require.Equal(t, got.GetBundle().GetSequence(), first.GetBundle().GetSequence())
		})
	}
}
