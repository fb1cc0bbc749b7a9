package istio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/internal/clocktest"
	"github.com/lanyard-id/lanyard/storage/storagetest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/upstream"
)

var istiodPolicy = ca.Policy{Rules: []ca.Rule{{
	Namespace: "istio-system", ServiceAccount: "istiod",
	DNSNames: []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"},
}}}

type istiodEnv struct {
	ca    *ca.CA
	auth  *ca.Authority
	rec   *storagetest.Recorder
	clock *clocktest.Clock
}

// newIstiodEnv is a real CA pipeline (self-signed root, authority,
// policy) on a fake clock, recording into memory.
func newIstiodEnv(t *testing.T, policy ca.Policy) *istiodEnv {
	t.Helper()
	clk := clocktest.New(time.Now().Truncate(time.Second))
	up, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: t.TempDir(), TrustDomain: testTD.Name(), Clock: clk.Now})
	require.NoError(t, err)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: testTD, Upstream: up, TTL: 720 * time.Hour, Clock: clk.Now})
	require.NoError(t, err)
	require.NoError(t, auth.Prepare(context.Background()))
	rec := &storagetest.Recorder{}
	issuer, err := ca.New(ca.Config{TrustDomain: testTD, Keys: auth, Recorder: rec, Policy: policy, Clock: clk.Now})
	require.NoError(t, err)
	return &istiodEnv{ca: issuer, auth: auth, rec: rec, clock: clk}
}

func (e *istiodEnv) controller(t *testing.T, client *fake.Clientset, mod func(*IstiodCertConfig)) *IstiodCert {
	t.Helper()
	cfg := IstiodCertConfig{Client: client, Signer: e.ca, Bundler: e.auth, Policy: e.ca.Policy(), Cluster: "prod", Clock: e.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewIstiodCert(cfg)
	require.NoError(t, err)
	return c
}

func getSecret(t *testing.T, client *fake.Clientset, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return s
}

// requireIstiodSecret checks the Secret as istiod reads it: tls.crt and
// tls.key a pair, the chain verifying to ca.crt for dns, and the SPIFFE ID
// of istiod's service account. It returns the leaf.
func requireIstiodSecret(t *testing.T, e *istiodEnv, s *corev1.Secret, dns ...string) *x509.Certificate {
	t.Helper()
	require.Equal(t, corev1.SecretTypeTLS, s.Type)
	pair, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
	require.NoError(t, err, "tls.crt and tls.key")
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(s.Data["ca.crt"]))
	require.Equal(t, string(certsPEM(e.auth.Bundle().Roots)), string(s.Data["ca.crt"]))
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		inter.AddCert(c)
	}
	for _, name := range dns {
		_, err = pair.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter,
			CurrentTime: e.clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, name)
	}
	require.ElementsMatch(t, dns, pair.Leaf.DNSNames)
	require.Len(t, pair.Leaf.URIs, 1)
	require.Equal(t, "spiffe://cluster.local/ns/istio-system/sa/istiod", pair.Leaf.URIs[0].String())
	return pair.Leaf
}

func TestIstiodCert(t *testing.T) {
	e := newIstiodEnv(t, istiodPolicy)
	client := fake.NewClientset()
	c := e.controller(t, client, nil)
	ctx := context.Background()

	next, err := c.Reconcile(ctx)
	require.NoError(t, err)
	leaf := requireIstiodSecret(t, e, getSecret(t, client, "istio-system", "istiod-tls"), "istiod.istio-system.svc")
	require.Equal(t, halfLife(leaf), next, "renewed at half-life")
	require.Equal(t, time.Hour, leaf.NotAfter.Sub(e.clock.Now()), "the CA's default TTL")
	require.Equal(t, 1, e.rec.Len(), "recorded")

	t.Run("current certificate is kept", func(t *testing.T) {
		e.clock.Advance(20 * time.Minute)
		again, err := c.Reconcile(ctx)
		require.NoError(t, err)
		require.Equal(t, next, again)
		require.Equal(t, 1, e.rec.Len())
	})
	t.Run("renewed at half-life", func(t *testing.T) {
		e.clock.Advance(11 * time.Minute)
		_, err := c.Reconcile(ctx)
		require.NoError(t, err)
		renewed := requireIstiodSecret(t, e, getSecret(t, client, "istio-system", "istiod-tls"), "istiod.istio-system.svc")
		require.NotEqual(t, leaf.SerialNumber, renewed.SerialNumber)
		require.Equal(t, 2, e.rec.Len())
	})
	for _, tt := range []struct {
		name   string
		change func(s *corev1.Secret)
	}{
		{"key replaced", func(s *corev1.Secret) { s.Data["tls.key"] = []byte("junk") }},
		{"certificate removed", func(s *corev1.Secret) { delete(s.Data, "tls.crt") }},
		{"roots out of date", func(s *corev1.Secret) { s.Data["ca.crt"] = certsPEM([]*x509.Certificate{selfSigned(t, "old")}) }},
	} {
		t.Run("repaired: "+tt.name, func(t *testing.T) {
			s := getSecret(t, client, "istio-system", "istiod-tls")
			s.Data["keep"] = []byte("me")
			tt.change(s)
			_, err := client.CoreV1().Secrets("istio-system").Update(ctx, s, metav1.UpdateOptions{})
			require.NoError(t, err)
			n := e.rec.Len()
			_, err = c.Reconcile(ctx)
			require.NoError(t, err)
			s = getSecret(t, client, "istio-system", "istiod-tls")
			requireIstiodSecret(t, e, s, "istiod.istio-system.svc")
			require.Equal(t, "me", string(s.Data["keep"]), "other keys are kept")
			require.Equal(t, n+1, e.rec.Len())
		})
	}
	t.Run("deleted Secret is recreated", func(t *testing.T) {
		require.NoError(t, client.CoreV1().Secrets("istio-system").Delete(ctx, "istiod-tls", metav1.DeleteOptions{}))
		_, err := c.Reconcile(ctx)
		require.NoError(t, err)
		requireIstiodSecret(t, e, getSecret(t, client, "istio-system", "istiod-tls"), "istiod.istio-system.svc")
	})
	t.Run("SANs changed in config", func(t *testing.T) {
		c2 := e.controller(t, client, func(cfg *IstiodCertConfig) {
			cfg.DNSNames = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}
			cfg.TTL = 2 * time.Hour
		})
		_, err := c2.Reconcile(ctx)
		require.NoError(t, err)
		l := requireIstiodSecret(t, e, getSecret(t, client, "istio-system", "istiod-tls"),
			"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local")
		require.Equal(t, 2*time.Hour, l.NotAfter.Sub(e.clock.Now()))
	})
}

func TestIstiodCertRefusesOtherSecretType(t *testing.T) {
	e := newIstiodEnv(t, istiodPolicy)
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod-tls"},
		Type:       corev1.SecretTypeDockerConfigJson,
	})
	_, err := e.controller(t, client, nil).Reconcile(context.Background())
	require.Error(t, err)
	require.Equal(t, 0, e.rec.Len(), "nothing issued for a Secret that cannot hold it")
}

func TestNewIstiodCertChecksPolicy(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy ca.Policy
		dns    []string
	}{
		{name: "no rule", policy: ca.Policy{}},
		{name: "rule without the name", policy: istiodPolicy, dns: []string{"istiod.other.svc"}},
		{name: "identity denied", policy: ca.Policy{
			Rules:          istiodPolicy.Rules,
			DenyIdentities: []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/istio-system/sa/istiod")},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newIstiodEnv(t, tt.policy)
			_, err := NewIstiodCert(IstiodCertConfig{Client: fake.NewClientset(), Signer: e.ca, Bundler: e.auth,
				Policy: e.ca.Policy(), DNSNames: tt.dns})
			require.Error(t, err)
		})
	}
}

func TestIstiodCertRun(t *testing.T) {
	e := newIstiodEnv(t, ca.Policy{Rules: []ca.Rule{{Namespace: "mesh", ServiceAccount: "istiod", DNSNames: []string{"istiod.mesh.svc"}}}})
	client := fake.NewClientset()
	// Another namespace: the DNS name follows it.
	c := e.controller(t, client, func(cfg *IstiodCertConfig) { cfg.Namespace = "mesh" })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	require.Eventually(t, func() bool {
		_, err := client.CoreV1().Secrets("mesh").Get(ctx, "istiod-tls", metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	s := getSecret(t, client, "mesh", "istiod-tls")
	pair, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
	require.NoError(t, err)
	require.Equal(t, []string{"istiod.mesh.svc"}, pair.Leaf.DNSNames)
	require.Equal(t, "spiffe://cluster.local/ns/mesh/sa/istiod", pair.Leaf.URIs[0].String())
}
