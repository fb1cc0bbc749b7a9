package istio

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/credentialfetcher"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	pkiutil "istio.io/istio/security/pkg/pki/util"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/lanyard-id/lanyard/integration/harness"
	"github.com/lanyard-id/lanyard/integration/harness/kube"
)

// Names of TestIstioWithKubernetes.
const (
	kubeCluster          = "mesh" // the CA's name for the API server's cluster
	kubeNodeA, kubeNodeB = "node-a", "node-b"
	caNamespace, caSA    = "lanyard", "lanyard-ca"
)

// istioCARules are all the CA's service account may do: the istio pod
// index lists and watches pods (no ConfigMaps, no Secrets: publishRootCert
// and istiod are off).
var istioCARules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
}

// kubeEnv is one kube-apiserver and a `lanyard ca` with Istio's API on it.
type kubeEnv struct {
	k  *kube.Kube
	ca *harness.CA
}

// startKubeEnv starts kube-apiserver, creates nodes, service accounts
// and pods (httpbin, ratings and ztunnel on node-a; reviews only on
// node-b), and starts `lanyard ca` verifying the cluster's tokens by OIDC
// discovery with the istio: section on. It returns once the Istio pod
// index has synced.
func startKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	k := kube.StartKube(t, kube.Options{Name: kubeCluster})
	k.Node(t, kubeNodeA)
	k.Node(t, kubeNodeB)
	for _, sa := range [][2]string{{"default", "httpbin"}, {"default", "ratings"}, {"default", "reviews"}, {"istio-system", "ztunnel"}} {
		k.ServiceAccount(t, sa[0], sa[1])
	}
	k.Pod(t, "default", "httpbin-a", "httpbin", kubeNodeA)
	k.Pod(t, "default", "ratings-a", "ratings", kubeNodeA)
	k.Pod(t, "default", "reviews-b", "reviews", kubeNodeB)
	kubeconfig := k.ServiceAccountKubeconfig(t, caNamespace, caSA, istioCARules)

	ca := harness.StartCA(t, harness.CAOptions{Config: map[string]any{
		"servingIPs": []string{"127.0.0.1"}, // CA_ADDR is 127.0.0.1:<port>
		"clusters": []any{map[string]any{
			"name": kubeCluster, "issuer": k.Issuer, "discoveryURL": k.Issuer, "caCertFile": k.CAFile,
		}},
		"istio": map[string]any{
			"enabled":                    true,
			"audience":                   istioAudience,
			"clusterAliases":             map[string]string{istioClusterID: kubeCluster},
			"trustedNodeServiceAccounts": []string{"istio-system/ztunnel"},
			"kubernetes": map[string]any{
				"enabled": true, "kubeconfig": kubeconfig, "cluster": kubeCluster,
				"publishRootCert": false, // no RBAC for ConfigMaps
			},
		},
	}})
	require.Eventually(t, func() bool { return strings.Contains(ca.Output(), "pod index synced") },
		30*time.Second, 50*time.Millisecond, "the CA's Istio pod index never synced")
	return &kubeEnv{k: k, ca: ca}
}

// podToken creates pod name of ns/sa on node and returns a TokenRequest
// token bound to it for Istio's audience.
func (e *kubeEnv) podToken(t *testing.T, ns, sa, name, node string) string {
	t.Helper()
	pod := e.k.Pod(t, ns, name, sa, node)
	return e.k.TokenRequest(t, ns, sa, []string{istioAudience}, pod, kube.MinTokenTTL)
}

// citadelClient builds Istio's citadel client as istio-agent does, with
// token as its JWT file (ISTIO_META_CLUSTER_ID Kubernetes, CA_ROOT_CA the
// CA's bundle file).
func (e *kubeEnv) citadelClient(t *testing.T, ns, sa, token string) (*security.Options, *citadel.CitadelClient) {
	t.Helper()
	opts := &security.Options{
		CAEndpoint:                     e.ca.GRPCAddr,
		CAProviderName:                 "Citadel",
		ClusterID:                      istioClusterID,
		TrustDomain:                    e.ca.TrustDomain.Name(),
		WorkloadNamespace:              ns,
		ServiceAccount:                 sa,
		SecretTTL:                      time.Hour,
		SecretRotationGracePeriodRatio: 0.5,
		WorkloadRSAKeySize:             2048,
		ECCSigAlg:                      string(pkiutil.EcdsaSigAlg),
		ECCCurve:                       "P256",
		CAHeaders:                      map[string]string{},
	}
	path := filepath.Join(t.TempDir(), "istio-token")
	require.NoError(t, os.WriteFile(path, []byte(token), 0o600))
	fetcher, err := credentialfetcher.NewCredFetcher(security.JWT, opts.TrustDomain, path, "")
	require.NoError(t, err)
	opts.CredFetcher = fetcher
	client, err := citadel.NewCitadelClient(opts, &citadel.TLSOptions{RootCert: e.ca.BundlePath()})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return opts, client
}

// genCSR makes a key and CSR for host as istio-agent does (P-256).
func genCSR(t *testing.T, host string) (csrPEM, keyPEM []byte) {
	t.Helper()
	csrPEM, keyPEM, err := pkiutil.GenCSR(pkiutil.CertOptions{
		Host: host, ECSigAlg: pkiutil.EcdsaSigAlg, ECCCurve: pkiutil.SupportedEllipticCurves("P256"),
	})
	require.NoError(t, err)
	return csrPEM, keyPEM
}

// requireKubeChain checks an answer: one PEM certificate per element, the
// last a root of the CA's bundle, Istio's VerifyCertificate for id with
// keyPEM, and go-spiffe's verification against the bundle.
func (e *kubeEnv) requireKubeChain(t *testing.T, chain []string, keyPEM []byte, id string) {
	t.Helper()
	require.GreaterOrEqual(t, len(chain), 2, "leaf ... root")
	var certs []*x509.Certificate
	for i, s := range chain {
		block, rest := pem.Decode([]byte(s))
		require.NotNil(t, block, "element %d", i)
		require.Empty(t, strings.TrimSpace(string(rest)), "element %d holds more than one certificate", i)
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		certs = append(certs, c)
	}
	bundle := e.ca.Bundle(t)
	require.True(t, bundle.HasX509Authority(certs[len(certs)-1]), "the last element is not a root of the bundle")
	require.NoError(t, pkiutil.VerifyCertificate(keyPEM, []byte(strings.Join(chain[:len(chain)-1], "")), []byte(chain[len(chain)-1]),
		&pkiutil.VerifyFields{
			Host:        id,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			KeyUsage:    x509.KeyUsageDigitalSignature,
		}), "Istio's VerifyCertificate")
	got, _, err := x509svid.Verify(certs[:len(certs)-1], bundle)
	require.NoError(t, err, "go-spiffe verification against the bundle")
	require.Equal(t, id, got.String())
}

// impersonate sends what ztunnel sends: the caller's token, ClusterID, and
// ImpersonatedIdentity in the request's metadata, with a CSR for target.
func (e *kubeEnv) impersonate(t *testing.T, token, target string) (*pb.IstioCertificateResponse, []byte, error) {
	t.Helper()
	csrPEM, keyPEM := genCSR(t, target)
	conn, err := grpc.NewClient(e.ca.GRPCAddr, grpc.WithTransportCredentials(
		credentials.NewTLS(tlsconfig.TLSClientConfig(e.ca.Bundle(t), tlsconfig.AuthorizeID(e.ca.CAID())))))
	require.NoError(t, err)
	defer conn.Close()
	meta, err := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": target})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), harness.CallTimeout)
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+token, "ClusterID", istioClusterID))
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(csrPEM), ValidityDuration: 3600, Metadata: meta,
	})
	return resp, keyPEM, err
}

// TestIstioWithKubernetes runs Istio's API of a `lanyard ca` (not dev
// mode) against a real kube-apiserver: istio-agent's citadel client with a
// TokenRequest token, and ztunnel's impersonation checked against the
// pods the CA's pod index sees on each node.
func TestIstioWithKubernetes(t *testing.T) {
	start := time.Now()
	e := startKubeEnv(t)
	t.Logf("kube-apiserver and lanyard ca ready in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		require.NotContains(t, e.ca.Output(), "eyJhbGciOi", "the CA logged something that looks like a JWT")
	})
	httpbinID := e.ca.WorkloadID("default", "httpbin").String()
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/httpbin", httpbinID)

	t.Run("istio-agent with a pod-bound token", func(t *testing.T) {
		token := e.podToken(t, "default", "httpbin", "httpbin-agent", kubeNodeA)
		_, client := e.citadelClient(t, "default", "httpbin", token)
		csrPEM, keyPEM := genCSR(t, httpbinID)
		chain, err := client.CSRSign(csrPEM, 3600)
		require.NoError(t, err)
		e.requireKubeChain(t, chain, keyPEM, httpbinID)
	})

	t.Run("istio-agent asking for another identity", func(t *testing.T) {
		token := e.podToken(t, "default", "httpbin", "httpbin-other", kubeNodeA)
		_, client := e.citadelClient(t, "default", "httpbin", token)
		csrPEM, _ := genCSR(t, e.ca.WorkloadID("default", "ratings").String())
		_, err := client.CSRSign(csrPEM, 3600)
		requireCode(t, err, codes.PermissionDenied)
	})

	ztunnelA := e.podToken(t, "istio-system", "ztunnel", "ztunnel-a", kubeNodeA)

	t.Run("ztunnel impersonates a pod on its node", func(t *testing.T) {
		resp, keyPEM, err := e.impersonate(t, ztunnelA, httpbinID)
		require.NoError(t, err)
		e.requireKubeChain(t, resp.GetCertChain(), keyPEM, httpbinID)
	})

	t.Run("ztunnel impersonates an identity whose pods run on another node", func(t *testing.T) {
		_, _, err := e.impersonate(t, ztunnelA, e.ca.WorkloadID("default", "reviews").String())
		require.Equal(t, codes.PermissionDenied, status.Code(err), "error: %v", err)
		require.Contains(t, status.Convert(err).Message(), "no pod of default/reviews on node "+kubeNodeA)
	})

	t.Run("untrusted caller impersonates a pod on its node", func(t *testing.T) {
		httpbinA := e.podToken(t, "default", "httpbin", "httpbin-imp", kubeNodeA)
		_, _, err := e.impersonate(t, httpbinA, e.ca.WorkloadID("default", "ratings").String())
		require.Equal(t, codes.PermissionDenied, status.Code(err), "error: %v", err)
		require.Contains(t, status.Convert(err).Message(), "not a trusted node service account")
	})
}
