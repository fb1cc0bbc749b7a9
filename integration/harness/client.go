package harness

import (
	"context"
	"crypto/tls"
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

// Dev-mode agent identity: the only service account `lanyard dev` lets
// attest as a node agent.
const (
	AgentNamespace      = "lanyard"
	AgentServiceAccount = "lanyard-agent"
	// DevCluster is the cluster name `lanyard dev` gives its token issuer.
	DevCluster = "dev"
)

// CallTimeout bounds each RPC the harness makes.
const CallTimeout = 15 * time.Second

// CAID is the SPIFFE ID the CA's serving certificate must carry.
func (d *Dev) CAID() spiffeid.ID {
	return spiffeid.RequireFromSegments(d.TrustDomain, "lanyard", "ca")
}

// AgentID is the SPIFFE ID of the agent on node.
func (d *Dev) AgentID(node string) spiffeid.ID {
	return spiffeid.RequireFromSegments(d.TrustDomain, "lanyard", "agent", DevCluster, node)
}

// WorkloadID is the SPIFFE ID of service account ns/sa.
func (d *Dev) WorkloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(d.TrustDomain, "ns", ns, "sa", sa)
}

// Bundle loads the trust bundle from bundle.pem.
func (d *Dev) Bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	return LoadBundle(t, d.TrustDomain, d.BundlePath())
}

// LoadBundle loads a PEM trust bundle of trust domain td.
func LoadBundle(t testing.TB, td spiffeid.TrustDomain, path string) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Load(td, path)
	if err != nil {
		t.Fatalf("harness: load bundle: %v", err)
	}
	if b.Empty() {
		t.Fatalf("harness: bundle %s has no root", path)
	}
	return b
}

// Client dials the CA over TLS without a client certificate, verifying its
// certificate against bundle.pem and its SPIFFE ID (CAID). The connection
// is closed when the test ends.
func (d *Dev) Client(t testing.TB) cav1.CAServiceClient {
	t.Helper()
	return d.dial(t, tlsconfig.TLSClientConfig(d.Bundle(t), tlsconfig.AuthorizeID(d.CAID())))
}

// DialAgent dials the CA over mTLS presenting svid (an agent SVID, or any
// other to test refusals), verifying the CA as Client does.
func (d *Dev) DialAgent(t testing.TB, svid *x509svid.SVID) cav1.CAServiceClient {
	t.Helper()
	return d.dial(t, tlsconfig.MTLSClientConfig(svid, d.Bundle(t), tlsconfig.AuthorizeID(d.CAID())))
}

func (d *Dev) dial(t testing.TB, tc *tls.Config) cav1.CAServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(d.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatalf("harness: dial %s: %v", d.GRPCAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCAServiceClient(conn)
}

// Context returns a context for one call, bounded by CallTimeout and
// cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

// AttestAgent sends AttestAgent with token and csr over server-
// authenticated TLS. On success it returns the agent SVID (with csr's key)
// and the response; otherwise the RPC's status error.
func (d *Dev) AttestAgent(t testing.TB, token string, csr *CSR) (*x509svid.SVID, *cav1.AttestAgentResponse, error) {
	t.Helper()
	resp, err := d.Client(t).AttestAgent(Context(t), &cav1.AttestAgentRequest{Token: token, Csr: csr.DER})
	if err != nil {
		return nil, nil, err
	}
	return csr.SVID(t, resp.GetSvid()), resp, nil
}

// Agent is a node agent attested to a Dev, with an mTLS client.
type Agent struct {
	Node   string
	SVID   *x509svid.SVID
	Client cav1.CAServiceClient
}

// NewAgent mints an agent token bound to a pod on node, attests it and
// dials the CA with the agent SVID. Any failure fails the test.
func (d *Dev) NewAgent(t testing.TB, node string) *Agent {
	t.Helper()
	tok := d.AgentToken(t, node)
	svid, _, err := d.AttestAgent(t, tok, NewCSR(t, CSROptions{}))
	if err != nil {
		t.Fatalf("harness: attest agent on %s: %v", node, err)
	}
	if svid.ID != d.AgentID(node) {
		t.Fatalf("harness: agent SVID is %s, want %s", svid.ID, d.AgentID(node))
	}
	return &Agent{Node: node, SVID: svid, Client: d.DialAgent(t, svid)}
}
