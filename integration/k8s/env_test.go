package k8s

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/lanyard-id/lanyard/integration/harness"
	"github.com/lanyard-id/lanyard/integration/harness/kube"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

// Names the tests share.
const (
	audience      = "lanyard" // of every token sent to the Lanyard CA API
	agentNS       = "lanyard"
	agentSA       = "lanyard-agent"
	caSA          = "lanyard-ca"
	appNS         = "shop"
	nodeA, nodeB  = "node-a", "node-b"
	tokenTTL      = kube.MinTokenTTL
	reviewTTL     = 4 * time.Second // west's tokenReview.cacheTTL
	boundPodSlack = 5 * time.Second // informer latency + the bound-pod wait (2s) + load
	// apiserverTokenCache is how long kube-apiserver itself keeps a
	// successful token authentication, TokenReview included (its
	// TokenSuccessCacheTTL, 10s, no flag).
	apiserverTokenCache = 10 * time.Second
)

// Methods, as the token metrics label them.
const (
	methodJWKS        = "jwks"
	methodTokenReview = "tokenreview"
)

// cluster is one control plane as the CA knows it.
type cluster struct {
	name   string // in the CA's clusters:
	method string
	k      *kube.Kube
}

// env is two control planes and one CA configured with both.
type env struct {
	east, west *cluster
	ca         *harness.CA
}

func (e *env) clusters() []*cluster { return []*cluster{e.east, e.west} }

// other is the cluster that is not c.
func (e *env) other(c *cluster) *cluster {
	if c == e.east {
		return e.west
	}
	return e.east
}

// caRules are all the CA's service account may do.
var caRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
}

// startEnv starts both control planes, gives each the agent and app
// service accounts, two nodes and the CA's least-privilege service
// account, and starts `lanyard ca` with a YAML file naming both clusters.
// It returns once the CA is ready and both pod indexes have synced.
func startEnv(t *testing.T) *env {
	t.Helper()
	ks := kube.StartKubes(t, kube.Options{Name: "east"}, kube.Options{Name: "west"})
	e := &env{east: &cluster{name: "east", method: methodJWKS, k: ks[0]}, west: &cluster{name: "west", method: methodTokenReview, k: ks[1]}}
	kubeconfigs := map[string]string{}
	for _, c := range e.clusters() {
		c.k.ServiceAccount(t, agentNS, agentSA)
		c.k.Namespace(t, appNS)
		c.k.Node(t, nodeA)
		c.k.Node(t, nodeB)
		kubeconfigs[c.name] = c.k.ServiceAccountKubeconfig(t, agentNS, caSA, caRules)
	}
	e.ca = harness.StartCA(t, harness.CAOptions{Config: map[string]any{
		"clusters": []any{
			map[string]any{
				"name": e.east.name, "issuer": e.east.k.Issuer, "discoveryURL": e.east.k.Issuer, "caCertFile": e.east.k.CAFile,
				"kubernetes": map[string]any{"kubeconfig": kubeconfigs[e.east.name], "checkBoundPod": true},
			},
			map[string]any{
				"name":        e.west.name,
				"tokenReview": map[string]any{"kubeconfig": kubeconfigs[e.west.name], "cacheTTL": reviewTTL.String()},
				"kubernetes":  map[string]any{"kubeconfig": kubeconfigs[e.west.name]},
			},
		},
		"agents": map[string]any{"serviceAccounts": []string{agentNS + "/" + agentSA}},
	}})
	for _, c := range e.clusters() {
		require.Eventually(t, func() bool {
			return e.ca.Metric(t, "lanyard_ca_pod_index_synced", `cluster="`+c.name+`"`) == 1
		}, 30*time.Second, 50*time.Millisecond, "pod index of %s never synced", c.name)
	}
	return e
}

// suffix makes object names unique across parallel subtests.
func suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// agent is a node agent's identity: its pod and its agent SVID, with an
// mTLS client.
type agent struct {
	node   string
	pod    *corev1.Pod
	svid   *x509svid.SVID
	client cav1.CAServiceClient
}

// agentPod creates a lanyard-agent pod on node and returns it with a token
// bound to it.
func agentPod(t *testing.T, c *cluster, node string) (*corev1.Pod, string) {
	t.Helper()
	pod := c.k.Pod(t, agentNS, "lanyard-agent-"+suffix(), agentSA, node)
	return pod, c.k.TokenRequest(t, agentNS, agentSA, []string{audience}, pod, tokenTTL)
}

// newAgent attests an agent pod on node of cluster c and dials the CA with
// its SVID; any failure fails the test.
func (e *env) newAgent(t *testing.T, c *cluster, node string) *agent {
	t.Helper()
	pod, token := agentPod(t, c, node)
	svid, err := e.ca.AttestAgent(t, c.name, token, harness.NewCSR(t, harness.CSROptions{}))
	require.NoError(t, err, "attest agent on %s/%s", c.name, node)
	require.Equal(t, e.ca.AgentID(c.name, node), svid.ID)
	return &agent{node: node, pod: pod, svid: svid, client: e.ca.DialAgent(t, svid)}
}

// workload creates a pod of service account sa (created if needed) on
// node and returns it with a token bound to it for aud.
func workload(t *testing.T, c *cluster, sa, node string, aud ...string) (*corev1.Pod, string) {
	t.Helper()
	if len(aud) == 0 {
		aud = []string{audience}
	}
	c.k.ServiceAccount(t, appNS, sa)
	pod := c.k.Pod(t, appNS, sa+"-"+suffix(), sa, node)
	return pod, c.k.TokenRequest(t, appNS, sa, aud, pod, tokenTTL)
}

// tokenEntry and attestedEntry are BatchSignSVIDs entries with a fresh
// P-256 CSR.
func tokenEntry(t *testing.T, token string) (*cav1.SVIDRequest, *harness.CSR) {
	csr := harness.NewCSR(t, harness.CSROptions{})
	return &cav1.SVIDRequest{Id: "e", Caller: &cav1.SVIDRequest_Token{Token: token}, Csr: csr.DER}, csr
}

func attestedEntry(t *testing.T, pod *corev1.Pod) (*cav1.SVIDRequest, *harness.CSR) {
	csr := harness.NewCSR(t, harness.CSROptions{})
	return &cav1.SVIDRequest{Id: "e", Caller: &cav1.SVIDRequest_Attested{Attested: &cav1.AttestedWorkload{
		Attestor: "k8s", Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName, PodName: pod.Name, PodUid: string(pod.UID),
	}}, Csr: csr.DER}, csr
}

// sign sends one entry through a and returns its result.
func (a *agent) sign(t *testing.T, e *cav1.SVIDRequest) *cav1.SVIDResult {
	t.Helper()
	resp, err := a.client.BatchSignSVIDs(harness.Context(t), &cav1.BatchSignSVIDsRequest{Requests: []*cav1.SVIDRequest{e}})
	require.NoError(t, err, "BatchSignSVIDs call")
	require.Len(t, resp.GetResults(), 1)
	return resp.GetResults()[0]
}

// requireSVID checks that res is an SVID for want, with csr's key, that
// verifies against the CA's bundle.
func (e *env) requireSVID(t *testing.T, res *cav1.SVIDResult, csr *harness.CSR, want spiffeid.ID) {
	t.Helper()
	require.Equal(t, codes.OK, codes.Code(res.GetCode()), "result code (message %q)", res.GetMessage())
	svid := csr.SVID(t, res.GetSvid())
	id, _, err := x509svid.Verify(svid.Certificates, e.ca.Bundle(t))
	require.NoError(t, err)
	require.Equal(t, want, id)
}

// requireCode checks a refused entry: code, and no SVID.
func requireCode(t *testing.T, want codes.Code, res *cav1.SVIDResult) {
	t.Helper()
	require.Equal(t, want, codes.Code(res.GetCode()), "result code (message %q)", res.GetMessage())
	require.Nil(t, res.GetSvid())
}

// requireStatus checks a refused call.
func requireStatus(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.Code(err), "status %v", err)
}

// unix is a NumericDate claim.
func unix(tm time.Time) int64 { return tm.Unix() }
