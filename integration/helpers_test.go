package integration

import (
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Defaults of `lanyard dev` the tests rely on.
const (
	defaultTTL = time.Hour
	maxTTL     = 24 * time.Hour
	agentTTL   = time.Hour
	// ttlSlack allows for the time between the request and the signature.
	ttlSlack = 15 * time.Second
)

// startDev starts a dev CA and an agent on node "node-a".
func startDev(t *testing.T) (*harness.Dev, *harness.Agent) {
	t.Helper()
	d := harness.StartDev(t, harness.Options{})
	return d, d.NewAgent(t, "node-a")
}

// workloadToken mints a projected token for ns/sa bound to a pod on the
// agent's node, as the kubelet would give a pod there.
func workloadToken(t *testing.T, d *harness.Dev, a *harness.Agent, ns, sa string, flags ...string) string {
	t.Helper()
	return d.Token(t, ns, sa, append([]string{"--pod", sa + "-0", "--node", a.Node}, flags...)...)
}

// entry is one BatchSignSVIDs entry with a token.
func entry(id, token string, csr []byte, ttl time.Duration) *cav1.SVIDRequest {
	e := &cav1.SVIDRequest{Id: id, Caller: &cav1.SVIDRequest_Token{Token: token}, Csr: csr}
	if ttl != 0 {
		e.Ttl = durationpb.New(ttl)
	}
	return e
}

// signOne sends one entry and returns its result; the call itself must
// succeed and answer exactly one result with the entry's id.
func signOne(t *testing.T, a *harness.Agent, e *cav1.SVIDRequest) *cav1.SVIDResult {
	t.Helper()
	resp, err := a.Client.BatchSignSVIDs(harness.Context(t), &cav1.BatchSignSVIDsRequest{Requests: []*cav1.SVIDRequest{e}})
	require.NoError(t, err, "BatchSignSVIDs call")
	require.Len(t, resp.GetResults(), 1)
	res := resp.GetResults()[0]
	require.Equal(t, e.GetId(), res.GetId(), "result id")
	return res
}

// requireSigned checks a successful result and returns its SVID: code 0, a
// chain that go-spiffe verifies against bundle.pem to the wanted ID, the
// CSR's key, serverAuth+clientAuth, and expires_at equal to NotAfter.
func requireSigned(t *testing.T, d *harness.Dev, res *cav1.SVIDResult, csr *harness.CSR, want spiffeid.ID) *x509svid.SVID {
	t.Helper()
	require.Equal(t, codes.OK, codes.Code(res.GetCode()), "result code (message %q)", res.GetMessage())
	require.NotNil(t, res.GetSvid(), "result has no SVID")
	require.Equal(t, want.String(), res.GetSvid().GetSpiffeId())
	svid := csr.SVID(t, res.GetSvid())
	requireVerifies(t, svid.Certificates, d.Bundle(t), want)
	leaf := svid.Certificates[0]
	require.ElementsMatch(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
	require.False(t, leaf.IsCA)
	require.True(t, res.GetSvid().GetExpiresAt().AsTime().Equal(leaf.NotAfter), "expires_at %s, NotAfter %s",
		res.GetSvid().GetExpiresAt().AsTime(), leaf.NotAfter)
	return svid
}

// requireVerifies verifies chain (leaf first, no root) against bundle with
// go-spiffe and checks the SPIFFE ID.
func requireVerifies(t *testing.T, chain []*x509.Certificate, bundle *x509bundle.Bundle, want spiffeid.ID) {
	t.Helper()
	id, chains, err := x509svid.Verify(chain, bundle)
	require.NoError(t, err, "x509svid.Verify")
	require.Equal(t, want, id)
	require.NotEmpty(t, chains)
	root := chains[0][len(chains[0])-1]
	require.True(t, bundle.HasX509Authority(root), "chain does not end at a bundle root")
}

// requireTTL checks that the leaf expires ttl after the request was sent
// (start), within ttlSlack.
func requireTTL(t *testing.T, leaf *x509.Certificate, start time.Time, ttl time.Duration) {
	t.Helper()
	got := leaf.NotAfter.Sub(start)
	require.InDelta(t, ttl.Seconds(), got.Seconds(), ttlSlack.Seconds(), "NotAfter is %s after the request, want %s", got, ttl)
}

// issuedCount is how many certificates the CA has issued, seen two ways:
// the records in its store and its issued-certificates counter.
type issuedCount struct {
	Records int
	Metric  float64
}

func issued(t *testing.T, d *harness.Dev) issuedCount {
	t.Helper()
	return issuedCount{Records: d.CertificateCount(t), Metric: d.Metric(t, harness.MetricIssued)}
}

func (c issuedCount) plus(n int) issuedCount {
	return issuedCount{Records: c.Records + n, Metric: c.Metric + float64(n)}
}

// requireHealthy checks the process is still running, /healthz and
// /readyz answer 200, and no panic was recovered.
func requireHealthy(t *testing.T, d *harness.Dev) {
	t.Helper()
	require.True(t, d.Running(), "lanyard dev exited")
	require.Equal(t, http.StatusOK, d.Healthz(t), "/healthz")
	require.Equal(t, http.StatusOK, d.Readyz(t), "/readyz")
	require.Zero(t, d.Metric(t, "lanyard_ca_panics_recovered_total"), "the CA recovered from a panic")
}

// roots returns the DER of a bundle's roots.
func roots(b *x509bundle.Bundle) [][]byte {
	var out [][]byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}
