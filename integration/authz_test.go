package integration

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/integration/harness"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// TestCallerAuthorization: who may call what. BatchSignSVIDs needs an
// agent SVID as client certificate; AttestAgent needs a token of the agent
// service account bound to a pod on a node; workload tokens are bound to
// the agent's node. Each refusal leaves no record and a healthy process.
func TestCallerAuthorization(t *testing.T) {
	t.Parallel()
	d, a := startDev(t)
	tok := workloadToken(t, d, a, "default", "default")
	csr := harness.NewCSR(t, harness.CSROptions{})
	workloadSVID := requireSigned(t, d, signOne(t, a, entry("w", tok, csr.DER, 0)), csr, d.WorkloadID("default", "default"))

	goodBatch := func(t *testing.T) {
		csr := harness.NewCSR(t, harness.CSROptions{})
		requireSigned(t, d, signOne(t, a, entry("good", tok, csr.DER, 0)), csr, d.WorkloadID("default", "default"))
	}
	// batch sends req with client and returns the call's code, or the
	// single entry's code when the call succeeds.
	batch := func(client func(*testing.T) cav1.CAServiceClient, req func(*testing.T) *cav1.BatchSignSVIDsRequest) func(*testing.T) (codes.Code, string, bool) {
		return func(t *testing.T) (codes.Code, string, bool) {
			resp, err := client(t).BatchSignSVIDs(harness.Context(t), req(t))
			if err != nil {
				return status.Code(err), status.Convert(err).Message(), false
			}
			if len(resp.GetResults()) != 1 {
				t.Fatalf("%d results for one entry", len(resp.GetResults()))
			}
			r := resp.GetResults()[0]
			return codes.Code(r.GetCode()), r.GetMessage(), r.GetSvid() != nil
		}
	}
	oneEntry := func(e func(*testing.T) *cav1.SVIDRequest) func(*testing.T) *cav1.BatchSignSVIDsRequest {
		return func(t *testing.T) *cav1.BatchSignSVIDsRequest {
			return &cav1.BatchSignSVIDsRequest{Requests: []*cav1.SVIDRequest{e(t)}}
		}
	}
	goodEntry := oneEntry(func(t *testing.T) *cav1.SVIDRequest {
		return entry("x", tok, harness.NewCSR(t, harness.CSROptions{}).DER, 0)
	})
	agentClient := func(*testing.T) cav1.CAServiceClient { return a.Client }
	attest := func(cluster string, token func(*testing.T) string) func(*testing.T) (codes.Code, string, bool) {
		return func(t *testing.T) (codes.Code, string, bool) {
			resp, err := d.Client(t).AttestAgent(harness.Context(t), &cav1.AttestAgentRequest{
				Token: token(t), Cluster: cluster, Csr: harness.NewCSR(t, harness.CSROptions{}).DER,
			})
			return status.Code(err), status.Convert(err).Message(), resp.GetSvid() != nil
		}
	}

	for _, tt := range []struct {
		name string
		code codes.Code
		send func(*testing.T) (codes.Code, string, bool)
	}{
		{name: "BatchSignSVIDs without client certificate", code: codes.Unauthenticated,
			send: batch(func(t *testing.T) cav1.CAServiceClient { return d.Client(t) }, goodEntry)},
		{name: "BatchSignSVIDs with a workload SVID as client certificate", code: codes.PermissionDenied,
			send: batch(func(t *testing.T) cav1.CAServiceClient { return d.DialAgent(t, workloadSVID) }, goodEntry)},
		{name: "BatchSignSVIDs with no entry", code: codes.InvalidArgument,
			send: batch(agentClient, func(*testing.T) *cav1.BatchSignSVIDsRequest { return &cav1.BatchSignSVIDsRequest{} })},
		{name: "BatchSignSVIDs with 1001 entries", code: codes.InvalidArgument,
			send: batch(agentClient, func(*testing.T) *cav1.BatchSignSVIDsRequest {
				req := &cav1.BatchSignSVIDsRequest{}
				for range 1001 {
					req.Requests = append(req.Requests, entry("x", tok, []byte{0x30}, 0))
				}
				return req
			})},
		{name: "entry with neither token nor attested workload", code: codes.InvalidArgument,
			send: batch(agentClient, oneEntry(func(t *testing.T) *cav1.SVIDRequest {
				return &cav1.SVIDRequest{Id: "x", Csr: harness.NewCSR(t, harness.CSROptions{}).DER}
			}))},
		{name: "entry attested by an attestor the CA does not support", code: codes.PermissionDenied,
			send: batch(agentClient, oneEntry(func(t *testing.T) *cav1.SVIDRequest {
				return &cav1.SVIDRequest{Id: "x", Csr: harness.NewCSR(t, harness.CSROptions{}).DER, Caller: &cav1.SVIDRequest_Attested{
					Attested: &cav1.AttestedWorkload{Attestor: "k8s", Namespace: "default", ServiceAccount: "default", PodName: "web-0", PodUid: "u"},
				}}
			}))},
		{name: "entry with a workload token bound to another node", code: codes.PermissionDenied,
			send: batch(agentClient, oneEntry(func(t *testing.T) *cav1.SVIDRequest {
				other := d.Token(t, "default", "default", "--pod", "web-1", "--node", "node-z")
				return entry("x", other, harness.NewCSR(t, harness.CSROptions{}).DER, 0)
			}))},
		{name: "AttestAgent with a token of a service account that is not the agent's", code: codes.PermissionDenied,
			send: attest("", func(t *testing.T) string {
				return d.Token(t, "default", "default", "--pod", "web-0", "--node", "node-q")
			})},
		{name: "AttestAgent with the agent's name in another namespace", code: codes.PermissionDenied,
			send: attest("", func(t *testing.T) string {
				return d.Token(t, "default", harness.AgentServiceAccount, "--pod", "agent-0", "--node", "node-q")
			})},
		{name: "AttestAgent with an agent token without node claim", code: codes.PermissionDenied,
			send: attest("", func(t *testing.T) string {
				return d.Token(t, harness.AgentNamespace, harness.AgentServiceAccount, "--pod", "lanyard-agent-q")
			})},
		{name: "AttestAgent with an agent token without pod claim", code: codes.PermissionDenied,
			send: attest("", func(t *testing.T) string {
				return d.Token(t, harness.AgentNamespace, harness.AgentServiceAccount, "--node", "node-q")
			})},
		{name: "AttestAgent for a cluster the CA does not know", code: codes.Unauthenticated,
			send: attest("prod", func(t *testing.T) string { return d.AgentToken(t, "node-q") })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			requireRefused(t, d, tt.code, tt.send, goodBatch)
		})
	}
}
