package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lanyard-id/lanyard/storage/storagetest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/upstream"
)

const istioYAML = `
clusters:
  - {name: prod, issuer: https://kubernetes.default.svc.cluster.local, jwksFile: /dev/null}
istio:
  enabled: true
  audience: mesh-ca
  clusterAliases: {Kubernetes: prod}
  trustedNodeServiceAccounts: [istio-system/ztunnel]
  rateLimit: {perSecond: 5, burst: 50, maxIdentities: 1000}
  kubernetes:
    enabled: true
    kubeconfig: KUBECONFIG
    cluster: prod
    istiod:
      enabled: true
      dnsNames: [istiod.istio-system.svc]
      ttl: 12h
policy:
  rules:
    - {namespace: istio-system, serviceAccount: istiod, dnsNames: [istiod.istio-system.svc]}
`

// writeKubeconfig writes a kubeconfig for a server nobody listens on:
// building clients and informers does not connect.
func writeKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600))
	return path
}

func loadIstioConfig(t *testing.T, yaml string) FileConfig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	cfg, err := loadConfig(path)
	require.NoError(t, err)
	return cfg
}

func TestIstioConfigParsed(t *testing.T) {
	cfg := loadIstioConfig(t, istioYAML)
	require.NoError(t, cfg.validate())
	ic := cfg.Istio
	require.True(t, ic.Enabled)
	require.Equal(t, "mesh-ca", ic.Audience)
	require.Equal(t, map[string]string{"Kubernetes": "prod"}, ic.ClusterAliases)
	require.Equal(t, []string{"istio-system/ztunnel"}, ic.TrustedNodeServiceAccounts)
	require.Equal(t, 5.0, ic.RateLimit.PerSecond)
	require.Equal(t, 50, ic.RateLimit.Burst)
	require.Equal(t, 1000, ic.RateLimit.MaxIdentities)
	require.True(t, ic.Kubernetes.Enabled)
	require.True(t, ic.Kubernetes.PublishRootCert, "on by default")
	require.Equal(t, "istio-ca-root-cert", ic.Kubernetes.RootCertName)
	require.True(t, ic.Kubernetes.Istiod.Enabled)
	require.Equal(t, 12*time.Hour, ic.Kubernetes.Istiod.TTL)
}

func TestIstioConfigDefaults(t *testing.T) {
	ic := defaultConfig().Istio
	require.False(t, ic.Enabled, "off unless asked for")
	require.Equal(t, "istio-ca", ic.Audience)
	require.Equal(t, 100.0, ic.RateLimit.PerSecond)
	require.Equal(t, 1000, ic.RateLimit.Burst)
}

func TestIstioConfigInvalid(t *testing.T) {
	base := "clusters: [{name: prod, issuer: https://k, jwksFile: /dev/null}]\n"
	for _, tt := range []struct{ name, yaml string }{
		{"alias to an unknown cluster", "istio: {enabled: true, clusterAliases: {Kubernetes: nope}}"},
		{"trusted account not namespace/name", "istio: {enabled: true, trustedNodeServiceAccounts: [ztunnel], kubernetes: {enabled: true}}"},
		{"trusted accounts without kubernetes", "istio: {enabled: true, trustedNodeServiceAccounts: [istio-system/ztunnel]}"},
		{"unknown kubernetes cluster", "istio: {enabled: true, kubernetes: {enabled: true, cluster: nope}}"},
		{"istiod without kubernetes", "istio: {enabled: true, kubernetes: {istiod: {enabled: true}}}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := loadIstioConfig(t, base+tt.yaml)
			require.Error(t, cfg.validate())
		})
	}
	t.Run("unknown key", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ca.yaml")
		require.NoError(t, os.WriteFile(path, []byte(base+"istio: {enabled: true, audiences: [x]}"), 0o600))
		_, err := loadConfig(path)
		require.Error(t, err)
	})
}

// testIssuer is a CA pipeline that is never asked to sign here.
func testIssuer(t *testing.T, policy ca.Policy) (*ca.CA, *ca.Authority) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	up, err := upstream.NewSelfSigned(upstream.SelfSignedConfig{Dir: t.TempDir(), TrustDomain: td.Name()})
	require.NoError(t, err)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: td, Upstream: up})
	require.NoError(t, err)
	issuer, err := ca.New(ca.Config{TrustDomain: td, Keys: auth, Recorder: &storagetest.Recorder{}, Policy: policy})
	require.NoError(t, err)
	return issuer, auth
}

func TestBuildIstio(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	kubeconfig := writeKubeconfig(t)

	t.Run("off", func(t *testing.T) {
		issuer, auth := testIssuer(t, ca.Policy{})
		p, err := buildIstio(defaultConfig(), issuer, auth, kube.PodIndexes{}, log)
		require.NoError(t, err)
		require.Nil(t, p)
		require.Nil(t, p.serverConfig())
		require.Empty(t, p.runners())
	})
	t.Run("API only", func(t *testing.T) {
		cfg := defaultConfig()
		cfg.Istio.Enabled = true
		issuer, auth := testIssuer(t, ca.Policy{})
		p, err := buildIstio(cfg, issuer, auth, kube.PodIndexes{}, log)
		require.NoError(t, err)
		sc := p.serverConfig()
		require.Equal(t, "istio-ca", sc.Audience)
		require.Equal(t, 100.0, sc.RateLimit)
		require.Nil(t, sc.Pods)
		require.Empty(t, p.runners())
	})
	t.Run("with kubernetes and istiod", func(t *testing.T) {
		cfg := loadIstioConfig(t, istioYAML)
		cfg.Istio.Kubernetes.Kubeconfig = kubeconfig
		require.NoError(t, cfg.validate())
		issuer, auth := testIssuer(t, cfg.Policy)
		pods := kube.PodIndexes{}
		p, err := buildIstio(cfg, issuer, auth, pods, log)
		require.NoError(t, err)
		sc := p.serverConfig()
		require.NotNil(t, sc.Pods)
		require.Len(t, pods, 1, "the pod index joins the cluster's indexes")
		require.Equal(t, "mesh-ca", sc.Audience)
		require.Equal(t, []string{"istio-system/ztunnel"}, sc.TrustedNodeServiceAccounts)
		require.Len(t, p.runners(), 2, "root cert publisher, istiod certificate")
	})
	t.Run("one pod informer per cluster", func(t *testing.T) {
		cfg := loadIstioConfig(t, istioYAML)
		cfg.Istio.Kubernetes.Kubeconfig = kubeconfig
		issuer, auth := testIssuer(t, cfg.Policy)
		client, err := kubeClient(kubeconfig)
		require.NoError(t, err)
		agents, err := kube.NewPodIndex(kube.PodIndexConfig{Cluster: cfg.Clusters[0].Name, Client: client})
		require.NoError(t, err)
		pods := kube.PodIndexes{cfg.Clusters[0].Name: agents}
		p, err := buildIstio(cfg, issuer, auth, pods, log)
		require.NoError(t, err)
		require.Len(t, pods, 1)
		require.Same(t, agents, p.serverConfig().Pods, "Istio uses the agents' pod index")
	})
	t.Run("istiod without a policy rule", func(t *testing.T) {
		cfg := loadIstioConfig(t, istioYAML)
		cfg.Istio.Kubernetes.Kubeconfig = kubeconfig
		issuer, auth := testIssuer(t, ca.Policy{})
		_, err := buildIstio(cfg, issuer, auth, kube.PodIndexes{}, log)
		require.ErrorContains(t, err, "policy does not grant")
	})
	t.Run("root cert publishing off", func(t *testing.T) {
		cfg := loadIstioConfig(t, istioYAML)
		cfg.Istio.Kubernetes.Kubeconfig = kubeconfig
		cfg.Istio.Kubernetes.PublishRootCert = false
		cfg.Istio.Kubernetes.Istiod.Enabled = false
		issuer, auth := testIssuer(t, cfg.Policy)
		pods := kube.PodIndexes{}
		p, err := buildIstio(cfg, issuer, auth, pods, log)
		require.NoError(t, err)
		require.Empty(t, p.runners())
		require.Len(t, pods, 1, "pod index only")
	})
}
