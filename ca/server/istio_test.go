package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	istiopb "istio.io/api/security/v1alpha1"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
)

// ztunnel is the trusted node proxy of the tests; app runs on node-a,
// far on node-b.
const (
	ztunnelSA = "istio-system/ztunnel"
)

func impersonationEnv(t testing.TB) (*istioEnv, *fakePods) {
	t.Helper()
	pods := newFakePods(
		"dev/node-a/istio-system/ztunnel", "dev/node-a/default/app",
		"dev/node-b/istio-system/ztunnel", "dev/node-b/default/far",
		"other/node-a/default/app",
	)
	e := newIstioEnv(t, istioEnvOptions{
		istio: IstioConfig{
			TrustedNodeServiceAccounts: []string{ztunnelSA}, Pods: pods,
			ClusterAliases: map[string]string{"Kubernetes": "dev"},
		},
		policy: ca.Policy{Rules: []ca.Rule{{Namespace: "istio-system", ServiceAccount: "istiod", DNSNames: []string{"istiod.istio-system.svc"}}}},
	})
	return e, pods
}

// parseChain checks the shape of cert_chain: each element exactly one PEM
// CERTIFICATE ending in "\n", and returns the certificates.
func parseChain(t testing.TB, chain []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for i, s := range chain {
		require.True(t, strings.HasSuffix(s, "\n"), "element %d does not end in a newline", i)
		block, rest := pem.Decode([]byte(s))
		require.NotNil(t, block, "element %d is not PEM", i)
		require.Equal(t, "CERTIFICATE", block.Type)
		require.Empty(t, rest, "element %d holds more than one PEM block", i)
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

// requireIstioChain checks the answer: leaf first, root last (a root of
// the bundle), the chain verifies to it for client and server auth, the
// leaf names want and nothing else, and lives ttl.
func requireIstioChain(t testing.TB, e *istioEnv, resp *istiopb.IstioCertificateResponse, want string, ttl time.Duration) *x509.Certificate {
	t.Helper()
	certs := parseChain(t, resp.GetCertChain())
	require.Len(t, certs, 3, "leaf, intermediate, root")
	leaf, root := certs[0], certs[len(certs)-1]
	require.Contains(t, e.auth.Bundle().Roots, root, "last element is not a bundle root")
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	require.NoError(t, err)
	require.Len(t, leaf.URIs, 1)
	require.Equal(t, want, leaf.URIs[0].String())
	require.False(t, leaf.IsCA)
	got := leaf.NotAfter.Sub(time.Now())
	require.InDelta(t, ttl.Seconds(), got.Seconds(), 30, "TTL")
	rec, err := e.store.GetCertificate(context.Background(), leaf.SerialNumber.Text(16))
	require.NoError(t, err, "certificate not recorded")
	require.Equal(t, ca.KindIstio, rec.Kind)
	require.Equal(t, want, rec.SPIFFEID)
	return leaf
}

func TestIstioCreateCertificate(t *testing.T) {
	e, _ := impersonationEnv(t)
	app := workloadIDString("default", "app")
	for _, tt := range []struct {
		name     string
		csr      string
		validity int64
		md       []string
		meta     map[string]any
		want     string
		ttl      time.Duration
	}{
		{name: "CSR with the identity, TTL asked", csr: istioCSR(t, app), validity: 7200,
			md: bearer(e.token(t, "default", "app"), "dev"), want: app, ttl: 2 * time.Hour},
		{name: "CSR without SAN gets the identity", csr: istioCSR(t), validity: 600,
			md: bearer(e.token(t, "default", "app"), "dev"), want: app, ttl: 10 * time.Minute},
		{name: "zero validity is the default", csr: istioCSR(t, app), validity: 0,
			md: bearer(e.token(t, "default", "app"), "dev"), want: app, ttl: time.Hour},
		{name: "negative validity is the default", csr: istioCSR(t, app), validity: -5,
			md: bearer(e.token(t, "default", "app"), "dev"), want: app, ttl: time.Hour},
		{name: "validity equal to the maximum", csr: istioCSR(t, app), validity: 86400,
			md: bearer(e.token(t, "default", "app"), "dev"), want: app, ttl: 24 * time.Hour},
		{name: "no ClusterID is the default cluster", csr: istioCSR(t, app), validity: 3600,
			md: []string{"authorization", "Bearer " + e.token(t, "default", "app")}, want: app, ttl: time.Hour},
		{name: "ClusterID alias", csr: istioCSR(t, app), validity: 3600,
			md: bearer(e.token(t, "default", "app"), "Kubernetes"), want: app, ttl: time.Hour},
		{name: "istio-agent's CertSigner metadata is ignored", csr: istioCSR(t, app), validity: 3600,
			md: bearer(e.token(t, "default", "app"), "dev"), meta: map[string]any{"CertSigner": ""}, want: app, ttl: time.Hour},
		{name: "granted DNS SAN", csr: istioCSR(t, workloadIDString("istio-system", "istiod"), "dns:istiod.istio-system.svc"), validity: 3600,
			md: bearer(e.token(t, "istio-system", "istiod"), "dev"), want: workloadIDString("istio-system", "istiod"), ttl: time.Hour},
		{name: "ztunnel impersonates a pod on its node", csr: istioCSR(t, app), validity: 3600,
			md: bearer(e.token(t, "istio-system", "ztunnel"), "dev"), meta: map[string]any{IstioImpersonatedIdentity: app},
			want: app, ttl: time.Hour},
		{name: "impersonating oneself needs no trust", csr: istioCSR(t, app), validity: 3600,
			md: bearer(e.token(t, "default", "app"), "dev"), meta: map[string]any{IstioImpersonatedIdentity: app},
			want: app, ttl: time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := &istiopb.IstioCertificateRequest{Csr: tt.csr, ValidityDuration: tt.validity}
			if tt.meta != nil {
				m, err := structpb.NewStruct(tt.meta)
				require.NoError(t, err)
				req.Metadata = m
			}
			resp, err := e.call(t, req, tt.md...)
			require.NoError(t, err)
			requireIstioChain(t, e, resp, tt.want, tt.ttl)
		})
	}
}

func TestIstioRejections(t *testing.T) {
	e, pods := impersonationEnv(t)
	app := workloadIDString("default", "app")
	good := istioCSR(t, app)
	tok := e.token(t, "default", "app")
	zt := e.token(t, "istio-system", "ztunnel")
	impersonate := func(id string) map[string]any { return map[string]any{IstioImpersonatedIdentity: id} }
	block, _ := pem.Decode([]byte(good))
	badSig := append([]byte(nil), block.Bytes...)
	badSig[len(badSig)-1] ^= 0xff

	for _, tt := range []struct {
		name     string
		csr      string
		validity int64
		md       []string
		meta     map[string]any
		metaVal  *structpb.Value
		code     codes.Code
	}{
		// Authentication.
		{name: "no header", csr: good, code: codes.Unauthenticated},
		{name: "only ClusterID", csr: good, md: []string{"ClusterID", "dev"}, code: codes.Unauthenticated},
		{name: "not a bearer token", csr: good, md: []string{"authorization", "Basic " + tok}, code: codes.Unauthenticated},
		{name: "empty bearer", csr: good, md: []string{"authorization", "Bearer "}, code: codes.Unauthenticated},
		{name: "two authorization headers", csr: good, md: []string{"authorization", "Bearer " + tok, "authorization", "Bearer " + tok}, code: codes.Unauthenticated},
		{name: "garbage token", csr: good, md: bearer("not.a.jwt", "dev"), code: codes.Unauthenticated},
		{name: "oversize token", csr: good, md: bearer(strings.Repeat("a", MaxTokenSize+1), "dev"), code: codes.Unauthenticated},
		{name: "wrong audience", csr: good, md: bearer(e.token(t, "default", "app", func(c *tokens.DevClaims) {
			c.Audiences = []string{"lanyard"}
		}), "dev"), code: codes.Unauthenticated},
		{name: "expired token", csr: good, md: bearer(e.token(t, "default", "app", func(c *tokens.DevClaims) {
			c.Now, c.TTL = time.Now().Add(-2*time.Hour), 10*time.Minute
		}), "dev"), code: codes.Unauthenticated},
		{name: "unknown cluster", csr: good, md: bearer(tok, "nope"), code: codes.Unauthenticated},
		{name: "token of another cluster's issuer", csr: good, md: bearer(tok, "other"), code: codes.Unauthenticated},
		{name: "two ClusterID headers", csr: good, md: append(bearer(tok, "dev"), "ClusterID", "dev"), code: codes.Unauthenticated},

		// The CSR.
		{name: "CSR for another identity", csr: istioCSR(t, workloadIDString("default", "other")), md: bearer(tok, "dev"), code: codes.PermissionDenied},
		{name: "CSR for another trust domain", csr: istioCSR(t, "spiffe://example.org/ns/default/sa/app"), md: bearer(tok, "dev"), code: codes.PermissionDenied},
		{name: "CSR with a DNS SAN not granted", csr: istioCSR(t, app, "dns:app.default.svc"), md: bearer(tok, "dev"), code: codes.PermissionDenied},
		{name: "CSR with two URI SANs", csr: istioCSR(t, app, workloadIDString("default", "x")), md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "CSR not PEM", csr: "hello", md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "empty CSR", csr: "", md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "PEM of another type", csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})), md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "data after the CSR", csr: good + "trailing", md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "CSR over 64 KiB", csr: good + strings.Repeat("\n", ca.MaxCSRSize), md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "CSR signature broken", csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig})), md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "CSR garbage DER", csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("xx")})), md: bearer(tok, "dev"), code: codes.InvalidArgument},

		// TTL.
		{name: "validity over the maximum", csr: good, validity: 86401, md: bearer(tok, "dev"), code: codes.InvalidArgument},
		{name: "validity beyond a Duration", csr: good, validity: math.MaxInt64, md: bearer(tok, "dev"), code: codes.InvalidArgument},

		// Impersonation.
		{name: "impersonation from an untrusted caller", csr: good, md: bearer(e.token(t, "default", "far"), "dev"),
			meta: impersonate(app), code: codes.PermissionDenied},
		{name: "impersonation for a pod on another node", csr: istioCSR(t, workloadIDString("default", "far")), md: bearer(zt, "dev"),
			meta: impersonate(workloadIDString("default", "far")), code: codes.PermissionDenied},
		{name: "impersonation for a service account with no pod", csr: istioCSR(t, workloadIDString("default", "ghost")), md: bearer(zt, "dev"),
			meta: impersonate(workloadIDString("default", "ghost")), code: codes.PermissionDenied},
		{name: "impersonation with a token naming no node", csr: good, md: bearer(e.token(t, "istio-system", "ztunnel", func(c *tokens.DevClaims) {
			c.NodeName = ""
		}), "dev"), meta: impersonate(app), code: codes.PermissionDenied},
		{name: "impersonation by a trusted account not on its token's node", csr: good, md: bearer(e.token(t, "istio-system", "ztunnel", func(c *tokens.DevClaims) {
			c.NodeName = "node-c"
		}), "dev"), meta: impersonate(app), code: codes.PermissionDenied},
		{name: "impersonated identity of another trust domain", csr: istioCSR(t, "spiffe://example.org/ns/default/sa/app"), md: bearer(zt, "dev"),
			meta: impersonate("spiffe://example.org/ns/default/sa/app"), code: codes.PermissionDenied},
		{name: "impersonated identity not a workload ID", csr: good, md: bearer(zt, "dev"),
			meta: impersonate("spiffe://cluster.local/lanyard/agent/dev/node-a"), code: codes.InvalidArgument},
		{name: "impersonated identity not a SPIFFE ID", csr: good, md: bearer(zt, "dev"),
			meta: impersonate("https://cluster.local/ns/default/sa/app"), code: codes.InvalidArgument},
		{name: "impersonated identity too long", csr: good, md: bearer(zt, "dev"),
			meta: impersonate("spiffe://cluster.local/ns/default/sa/" + strings.Repeat("a", maxIdentityLen)), code: codes.InvalidArgument},
		{name: "impersonated identity not a string", csr: good, md: bearer(zt, "dev"),
			metaVal: structpb.NewNumberValue(1), code: codes.InvalidArgument},
		{name: "CSR not for the impersonated identity", csr: istioCSR(t, workloadIDString("istio-system", "ztunnel")), md: bearer(zt, "dev"),
			meta: impersonate(app), code: codes.PermissionDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := &istiopb.IstioCertificateRequest{Csr: tt.csr, ValidityDuration: tt.validity}
			switch {
			case tt.meta != nil:
				m, err := structpb.NewStruct(tt.meta)
				require.NoError(t, err)
				req.Metadata = m
			case tt.metaVal != nil:
				req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{IstioImpersonatedIdentity: tt.metaVal}}
			}
			resp, err := e.call(t, req, tt.md...)
			require.Nil(t, resp)
			require.Equal(t, tt.code, status.Code(err), "error: %v", err)
			require.NotEqual(t, "internal error", status.Convert(err).Message())
		})
	}

	t.Run("pod index unavailable", func(t *testing.T) {
		pods.fail(kube.ErrUnavailable)
		defer pods.fail(nil)
		m, err := structpb.NewStruct(impersonate(app))
		require.NoError(t, err)
		_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: good, Metadata: m}, bearer(zt, "dev")...)
		require.Equal(t, codes.Unavailable, status.Code(err), "error: %v", err)
	})
	t.Run("pod index fails otherwise", func(t *testing.T) {
		pods.fail(errors.New("boom"))
		defer pods.fail(nil)
		m, err := structpb.NewStruct(impersonate(app))
		require.NoError(t, err)
		_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: good, Metadata: m}, bearer(zt, "dev")...)
		require.Equal(t, codes.Internal, status.Code(err), "error: %v", err)
		require.Equal(t, "internal error", status.Convert(err).Message(), "no detail leaks")
	})
}

func TestIstioImpersonationNotConfigured(t *testing.T) {
	app := workloadIDString("default", "app")
	for _, tt := range []struct {
		name string
		cfg  IstioConfig
	}{
		{name: "no pod locator", cfg: IstioConfig{TrustedNodeServiceAccounts: []string{ztunnelSA}}},
		{name: "no trusted accounts", cfg: IstioConfig{Pods: newFakePods("dev/node-a/istio-system/ztunnel", "dev/node-a/default/app")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newIstioEnv(t, istioEnvOptions{istio: tt.cfg})
			m, err := structpb.NewStruct(map[string]any{IstioImpersonatedIdentity: app})
			require.NoError(t, err)
			_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: istioCSR(t, app), Metadata: m},
				bearer(e.token(t, "istio-system", "ztunnel"), "dev")...)
			require.Equal(t, codes.PermissionDenied, status.Code(err), "error: %v", err)
		})
	}
}

func TestIstioConfigurableAudience(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{istio: IstioConfig{Audience: "mesh-ca"}})
	app := workloadIDString("default", "app")
	_, err := e.call(t, &istiopb.IstioCertificateRequest{Csr: istioCSR(t, app)}, bearer(e.token(t, "default", "app"), "dev")...)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "istio-ca token refused when the audience is mesh-ca")
	resp, err := e.call(t, &istiopb.IstioCertificateRequest{Csr: istioCSR(t, app)}, bearer(e.token(t, "default", "app", func(c *tokens.DevClaims) {
		c.Audiences = []string{"mesh-ca"}
	}), "dev")...)
	require.NoError(t, err)
	requireIstioChain(t, e, resp, app, time.Hour)
}

func TestIstioRateLimit(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{istio: IstioConfig{RateLimit: 1e-6, RateBurst: 2}})
	app, other := workloadIDString("default", "app"), workloadIDString("default", "other")
	req := func(id string) *istiopb.IstioCertificateRequest {
		return &istiopb.IstioCertificateRequest{Csr: istioCSR(t, id)}
	}
	appTok, otherTok := e.token(t, "default", "app"), e.token(t, "default", "other")
	for range 2 {
		_, err := e.call(t, req(app), bearer(appTok, "dev")...)
		require.NoError(t, err)
	}
	_, err := e.call(t, req(app), bearer(appTok, "dev")...)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "error: %v", err)
	_, err = e.call(t, req(other), bearer(otherTok, "dev")...)
	require.NoError(t, err, "the limit is per identity")
	// A refused request costs nothing: rejections before the limit do not
	// use a token.
	_, err = e.call(t, req(other), bearer(otherTok, "nope")...)
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	_, err = e.call(t, req(other), bearer(otherTok, "dev")...)
	require.NoError(t, err)
}

func TestIstioOverload(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{overload: true})
	app := workloadIDString("default", "app")
	tok := e.token(t, "default", "app")
	// Hold the only signing slot, then ask.
	release, err := e.srv.istio.limit.acquire(context.Background())
	require.NoError(t, err)
	_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: istioCSR(t, app)}, bearer(tok, "dev")...)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "error: %v", err)
	release()
	_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: istioCSR(t, app)}, bearer(tok, "dev")...)
	require.NoError(t, err)
}

func TestNewIstioServiceValidates(t *testing.T) {
	for _, sa := range []string{"ztunnel", "/ztunnel", "istio-system/", "a/b/c"} {
		_, err := newIstioService(IstioConfig{TrustedNodeServiceAccounts: []string{sa}}, &caService{}, time.Now)
		require.Error(t, err, sa)
	}
}

func TestIstioCSRDER(t *testing.T) {
	good := istioCSR(t)
	block, _ := pem.Decode([]byte(good))
	for _, tt := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"one block", good, true},
		{"trailing newlines", good + "\n\r\n\t ", true},
		{"NEW CERTIFICATE REQUEST", string(pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes})), true},
		{"two blocks", good + good, false},
		{"other type", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: block.Bytes})), false},
		{"no block", "CSR", false},
		{"over the bound", strings.Repeat(" ", ca.MaxCSRSize) + good, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			der, err := csrDER(tt.in)
			if !tt.ok {
				require.ErrorIs(t, err, ca.ErrInvalidCSR)
				return
			}
			require.NoError(t, err)
			require.Equal(t, block.Bytes, der)
		})
	}
}

func TestIstioValidity(t *testing.T) {
	for _, tt := range []struct {
		in   int64
		want time.Duration
		ok   bool
	}{
		{0, 0, true}, {-1, 0, true}, {math.MinInt64, 0, true}, {3600, time.Hour, true},
		{math.MaxInt64 / int64(time.Second), time.Duration(math.MaxInt64/int64(time.Second)) * time.Second, true},
		{math.MaxInt64/int64(time.Second) + 1, 0, false}, {math.MaxInt64, 0, false},
	} {
		got, err := validity(tt.in)
		if !tt.ok {
			require.ErrorIs(t, err, ca.ErrInvalidRequest, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
}
