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
	"istio.io/istio/security/pkg/nodeagent/cache"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	nodeagentutil "istio.io/istio/security/pkg/nodeagent/util"
	pkiutil "istio.io/istio/security/pkg/pki/util"

	"github.com/lanyard-id/lanyard/integration/harness"
)

// What `lanyard dev` configures and the tests rely on.
const (
	istioAudience = "istio-ca"
	// istioClusterID is what istio-agent sends as ClusterID unless the
	// mesh names its cluster; dev mode maps it to its cluster "dev".
	istioClusterID = "Kubernetes"
	defaultTTL     = time.Hour
	// ttlSlack allows for the time between the request and the signature.
	ttlSlack = 30 * time.Second
)

// agent is istio-agent's CA side for one workload: its options, its
// token file, and the citadel client istio-agent uses with them.
type agent struct {
	opts   *security.Options
	client *citadel.CitadelClient
	id     string
}

type agentOptions struct {
	ns, sa      string
	clusterID   string
	audience    string // default istio-ca
	secretTTL   time.Duration
	noTokenFile bool
}

// newAgent mints a token with `lanyard dev token --audience istio-ca`,
// writes it where Istio's token credential fetcher reads it, and builds
// the citadel client the way istio-agent does (TLS to CA_ADDR verified
// against the root file, CA_ROOT_CA).
func newAgent(t *testing.T, d *harness.Dev, o agentOptions) *agent {
	t.Helper()
	if o.clusterID == "" {
		o.clusterID = istioClusterID
	}
	if o.audience == "" {
		o.audience = istioAudience
	}
	if o.secretTTL == 0 {
		o.secretTTL = 2 * time.Hour
	}
	opts := &security.Options{
		CAEndpoint:                     d.GRPCAddr,
		CAProviderName:                 "Citadel",
		ClusterID:                      o.clusterID,
		TrustDomain:                    d.TrustDomain.Name(),
		WorkloadNamespace:              o.ns,
		ServiceAccount:                 o.sa,
		SecretTTL:                      o.secretTTL,
		SecretRotationGracePeriodRatio: 0.5,
		WorkloadRSAKeySize:             2048,
		ECCSigAlg:                      string(pkiutil.EcdsaSigAlg),
		ECCCurve:                       "P256",
		CAHeaders:                      map[string]string{},
	}
	if !o.noTokenFile {
		tok := d.Token(t, o.ns, o.sa, "--audience", o.audience, "--pod", o.sa+"-0", "--node", "node-a")
		path := filepath.Join(t.TempDir(), "istio-token")
		require.NoError(t, os.WriteFile(path, []byte(tok), 0o600))
		fetcher, err := credentialfetcher.NewCredFetcher(security.JWT, opts.TrustDomain, path, "")
		require.NoError(t, err)
		opts.CredFetcher = fetcher
	}
	client, err := citadel.NewCitadelClient(opts, &citadel.TLSOptions{RootCert: d.BundlePath()})
	require.NoError(t, err)
	return &agent{opts: opts, client: client, id: d.WorkloadID(o.ns, o.sa).String()}
}

// csr makes a key and CSR exactly as istio-agent's secret manager does.
func (a *agent) csr(t *testing.T, host string) (csrPEM, keyPEM []byte) {
	t.Helper()
	csrPEM, keyPEM, err := pkiutil.GenCSR(pkiutil.CertOptions{
		Host:       host,
		RSAKeySize: a.opts.WorkloadRSAKeySize,
		ECSigAlg:   pkiutil.SupportedECSignatureAlgorithms(a.opts.ECCSigAlg),
		ECCCurve:   pkiutil.SupportedEllipticCurves(a.opts.ECCCurve),
	})
	require.NoError(t, err)
	return csrPEM, keyPEM
}

// requireChain checks an answer with Istio's own code and with go-spiffe:
// one PEM certificate per element, each ending in "\n"; the last element
// is the root of bundle.pem; Istio's VerifyCertificate (chain to the root,
// key match, SPIFFE ID, key usages, not a CA); istio-agent's expiry
// parsing; the TTL; the record in the store. It returns the leaf.
func requireChain(t *testing.T, d *harness.Dev, chain []string, keyPEM []byte, id string, ttl time.Duration) *x509.Certificate {
	t.Helper()
	require.Len(t, chain, 3, "leaf, intermediate, root")
	var certs []*x509.Certificate
	for i, s := range chain {
		require.True(t, strings.HasSuffix(s, "\n"), "element %d does not end in a newline", i)
		block, rest := pem.Decode([]byte(s))
		require.NotNil(t, block, "element %d", i)
		require.Equal(t, "CERTIFICATE", block.Type)
		require.Empty(t, strings.TrimSpace(string(rest)), "element %d holds more than one certificate", i)
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		certs = append(certs, c)
	}
	root := certs[len(certs)-1]
	bundle := d.Bundle(t)
	require.True(t, bundle.HasX509Authority(root), "the last element is not a root of bundle.pem")

	leafAndIntermediates := []byte(strings.Join(chain[:len(chain)-1], ""))
	require.NoError(t, pkiutil.VerifyCertificate(keyPEM, leafAndIntermediates, []byte(chain[len(chain)-1]), &pkiutil.VerifyFields{
		Host:        id,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		IsCA:        false,
	}), "Istio's VerifyCertificate")

	// What istio-agent's secret manager does with the answer.
	expiry, err := nodeagentutil.ParseCertAndGetExpiryTimestamp([]byte(strings.Join(chain, "")))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(ttl), expiry, ttlSlack, "TTL")

	gotID, _, err := x509svid.Verify(certs[:len(certs)-1], bundle)
	require.NoError(t, err, "go-spiffe verification against bundle.pem")
	require.Equal(t, id, gotID.String())
	leaf := certs[0]
	require.True(t, d.HasCertificate(t, leaf.SerialNumber.Text(16)), "certificate is not in the store")
	return leaf
}

// requireCode checks the gRPC code in an error from CSRSign, which keeps
// only the status' text.
func requireCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	require.Error(t, err)
	require.Contains(t, err.Error(), "code = "+code.String(), "error: %v", err)
}

func TestCitadelClientCSRSign(t *testing.T) {
	d := harness.StartDev(t, harness.Options{})
	a := newAgent(t, d, agentOptions{ns: "default", sa: "app"})
	defer a.client.Close()
	for _, tt := range []struct {
		name string
		ttl  int64
		want time.Duration
	}{
		{"SECRET_TTL asked for", 7200, 2 * time.Hour},
		{"shorter TTL", 1800, 30 * time.Minute},
		{"no TTL is the CA default", 0, defaultTTL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csrPEM, keyPEM := a.csr(t, a.id)
			chain, err := a.client.CSRSign(csrPEM, tt.ttl)
			require.NoError(t, err)
			requireChain(t, d, chain, keyPEM, a.id, tt.want)
		})
	}
	t.Run("ClusterID of the CA's own name", func(t *testing.T) {
		b := newAgent(t, d, agentOptions{ns: "default", sa: "app", clusterID: harness.DevCluster})
		defer b.client.Close()
		csrPEM, keyPEM := b.csr(t, b.id)
		chain, err := b.client.CSRSign(csrPEM, 3600)
		require.NoError(t, err)
		requireChain(t, d, chain, keyPEM, b.id, time.Hour)
	})
}

// TestIstioAgentSecretManager runs istio-agent's secret manager (what
// serves Envoy's SDS "default" and "ROOTCA") on the citadel client: it
// makes the key and CSR, calls the CA, checks and caches the answer.
func TestIstioAgentSecretManager(t *testing.T) {
	d := harness.StartDev(t, harness.Options{})
	a := newAgent(t, d, agentOptions{ns: "bookinfo", sa: "reviews", secretTTL: 90 * time.Minute})
	sm, err := cache.NewSecretManagerClient(a.client, a.opts)
	require.NoError(t, err)
	defer sm.Close() // closes the citadel client too

	item, err := sm.GenerateSecret(security.WorkloadKeyCertResourceName)
	require.NoError(t, err)
	require.Equal(t, security.WorkloadKeyCertResourceName, item.ResourceName)
	require.WithinDuration(t, time.Now().Add(90*time.Minute), item.ExpireTime, ttlSlack)
	require.NoError(t, pkiutil.VerifyCertificate(item.PrivateKey, item.CertificateChain, item.RootCert, &pkiutil.VerifyFields{
		Host:        a.id,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}))

	root, err := sm.GenerateSecret(security.RootCertReqResourceName)
	require.NoError(t, err)
	bundlePEM, err := os.ReadFile(d.BundlePath())
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(bundlePEM)), strings.TrimSpace(string(root.RootCert)),
		"ROOTCA is the root Lanyard published")
}

func TestRejectedThroughIstioClient(t *testing.T) {
	d := harness.StartDev(t, harness.Options{})
	for _, tt := range []struct {
		name string
		opts agentOptions
		host string // CSR SAN; default the agent's identity
		ttl  int64
		code codes.Code
	}{
		{name: "no token", opts: agentOptions{ns: "default", sa: "app", noTokenFile: true}, ttl: 3600, code: codes.Unauthenticated},
		{name: "wrong audience", opts: agentOptions{ns: "default", sa: "app", audience: "lanyard"},
			ttl: 3600, code: codes.Unauthenticated},
		{name: "unknown cluster", opts: agentOptions{ns: "default", sa: "app", clusterID: "elsewhere"}, ttl: 3600, code: codes.Unauthenticated},
		{name: "CSR for another identity", opts: agentOptions{ns: "default", sa: "app"},
			host: "spiffe://cluster.local/ns/default/sa/admin", ttl: 3600, code: codes.PermissionDenied},
		{name: "SECRET_TTL over the CA's maximum", opts: agentOptions{ns: "default", sa: "app"}, ttl: 48 * 3600, code: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgent(t, d, tt.opts)
			defer a.client.Close()
			host := tt.host
			if host == "" {
				host = a.id
			}
			csrPEM, _ := a.csr(t, host)
			_, err := a.client.CSRSign(csrPEM, tt.ttl)
			requireCode(t, err, tt.code)
		})
	}
}

// TestImpersonationRefusedInDevMode sends what ztunnel sends: dev mode has
// no Kubernetes to check nodes against, so impersonation is refused.
func TestImpersonationRefusedInDevMode(t *testing.T) {
	d := harness.StartDev(t, harness.Options{})
	a := newAgent(t, d, agentOptions{ns: "istio-system", sa: "ztunnel"})
	defer a.client.Close()
	target := d.WorkloadID("default", "app").String()
	csrPEM, _ := a.csr(t, target)

	tok := d.Token(t, "istio-system", "ztunnel", "--audience", istioAudience, "--pod", "ztunnel-0", "--node", "node-a")
	conn, err := grpc.NewClient(d.GRPCAddr, grpc.WithTransportCredentials(
		credentials.NewTLS(tlsconfig.TLSClientConfig(d.Bundle(t), tlsconfig.AuthorizeID(d.CAID())))))
	require.NoError(t, err)
	defer conn.Close()
	meta, err := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": target})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), harness.CallTimeout)
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok, "ClusterID", istioClusterID))
	_, err = pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(csrPEM), ValidityDuration: 3600, Metadata: meta,
	})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "error: %v", err)
}
