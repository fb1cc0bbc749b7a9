package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/istio"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/server"
)

// IstioConfig is the istio: section: Istio's certificate API on the CA's
// gRPC port, and what Istio needs around it in Kubernetes.
type IstioConfig struct {
	Enabled bool `yaml:"enabled"`
	// Audience of istio-agent's tokens (default istio-ca).
	Audience string `yaml:"audience"`
	// ClusterAliases maps the ClusterID Istio proxies send (Istio's
	// cluster name, "Kubernetes" unless set) to a name in clusters:.
	ClusterAliases map[string]string `yaml:"clusterAliases"`
	// TrustedNodeServiceAccounts ("namespace/name", e.g.
	// istio-system/ztunnel) may ask for the identities of pods on their
	// node (ImpersonatedIdentity). Needs kubernetes.enabled.
	TrustedNodeServiceAccounts []string `yaml:"trustedNodeServiceAccounts"`
	RateLimit                  struct {
		// PerSecond and Burst of one SPIFFE ID's token bucket (100, 1000);
		// a negative perSecond turns the limit off. MaxIdentities bounds
		// the buckets kept (100000).
		PerSecond     float64 `yaml:"perSecond"`
		Burst         int     `yaml:"burst"`
		MaxIdentities int     `yaml:"maxIdentities"`
	} `yaml:"rateLimit"`
	Kubernetes IstioKubernetesConfig `yaml:"kubernetes"`
}

// IstioKubernetesConfig says how the CA reaches the cluster Istio runs in.
type IstioKubernetesConfig struct {
	// Enabled starts the pod index (impersonation), the root ConfigMap
	// publisher and, when istiod.enabled, the istiod certificate.
	Enabled bool `yaml:"enabled"`
	// Kubeconfig path; empty means in-cluster configuration.
	Kubeconfig string `yaml:"kubeconfig"`
	// Cluster is which of clusters: this API server is (default: the
	// first).
	Cluster string `yaml:"cluster"`
	// PublishRootCert keeps the root in the istio-ca-root-cert ConfigMap
	// (key root-cert.pem) of every namespace (default true).
	PublishRootCert bool   `yaml:"publishRootCert"`
	RootCertName    string `yaml:"rootCertConfigMap"`
	Istiod          struct {
		// Enabled issues istiod's serving certificate into a Secret.
		Enabled        bool          `yaml:"enabled"`
		Namespace      string        `yaml:"namespace"`      // istio-system
		ServiceAccount string        `yaml:"serviceAccount"` // istiod
		SecretName     string        `yaml:"secretName"`     // istiod-tls
		DNSNames       []string      `yaml:"dnsNames"`       // istiod.<namespace>.svc
		TTL            time.Duration `yaml:"ttl"`            // the CA's default
	} `yaml:"istiod"`
}

func defaultIstioConfig() IstioConfig {
	var c IstioConfig
	c.Audience = server.DefaultIstioAudience
	c.RateLimit.PerSecond = server.DefaultIstioRateLimit
	c.RateLimit.Burst = server.DefaultIstioRateBurst
	c.RateLimit.MaxIdentities = server.DefaultIstioRateIdentities
	c.Kubernetes.PublishRootCert = true
	c.Kubernetes.RootCertName = istio.IstioRootCertConfigMap
	return c
}

func (c *IstioConfig) validate(clusters []ClusterConfig) error {
	if !c.Enabled {
		return nil
	}
	known := func(name string) bool {
		for _, cl := range clusters {
			if cl.Name == name {
				return true
			}
		}
		return false
	}
	for id, name := range c.ClusterAliases {
		if !known(name) {
			return fmt.Errorf("config: istio.clusterAliases: %q maps to %q, which is not in clusters", id, name)
		}
	}
	for _, sa := range c.TrustedNodeServiceAccounts {
		if ns, name, ok := strings.Cut(sa, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("config: istio.trustedNodeServiceAccounts: %q is not namespace/name", sa)
		}
	}
	if len(c.TrustedNodeServiceAccounts) > 0 && !c.Kubernetes.Enabled {
		return errors.New("config: istio.trustedNodeServiceAccounts needs istio.kubernetes.enabled (pods are looked up on their nodes)")
	}
	if c.Kubernetes.Cluster != "" && !known(c.Kubernetes.Cluster) {
		return fmt.Errorf("config: istio.kubernetes.cluster %q is not in clusters", c.Kubernetes.Cluster)
	}
	if c.Kubernetes.Istiod.Enabled && !c.Kubernetes.Enabled {
		return errors.New("config: istio.kubernetes.istiod needs istio.kubernetes.enabled")
	}
	return nil
}

// istioParts is what the istio: section adds to a CA.
type istioParts struct {
	server *server.IstioConfig
	// run are the Kubernetes controllers, run beside the CA.
	run []func(context.Context) error
}

// serverConfig is the server's Istio configuration (nil: Istio off).
func (p *istioParts) serverConfig() *server.IstioConfig {
	if p == nil {
		return nil
	}
	return p.server
}

// runners are the controllers to run beside the CA, after it is prepared.
func (p *istioParts) runners() []func(context.Context) error {
	if p == nil {
		return nil
	}
	return p.run
}

// buildIstio wires the istio: section. It returns nil parts when Istio is
// off. Impersonation uses the cluster's pod index from pods, which it adds
// there when the cluster has none yet: one pod informer per cluster.
func buildIstio(cfg FileConfig, issuer *ca.CA, authority *ca.Authority, pods kube.PodIndexes, log *slog.Logger) (*istioParts, error) {
	ic := cfg.Istio
	if !ic.Enabled {
		return nil, nil
	}
	p := &istioParts{server: &server.IstioConfig{
		Audience: ic.Audience, ClusterAliases: ic.ClusterAliases, TrustedNodeServiceAccounts: ic.TrustedNodeServiceAccounts,
		RateLimit: ic.RateLimit.PerSecond, RateBurst: ic.RateLimit.Burst, RateLimitIdentities: ic.RateLimit.MaxIdentities,
	}}
	k := ic.Kubernetes
	if !k.Enabled {
		return p, nil
	}
	client, err := kubeClient(k.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("istio: %w", err)
	}
	cluster := k.Cluster
	if cluster == "" && len(cfg.Clusters) > 0 {
		cluster = cfg.Clusters[0].Name
	}
	klog := log.With("component", "istio-kube", "cluster", cluster)
	idx, ok := pods[cluster]
	if !ok {
		if idx, err = kube.NewPodIndex(kube.PodIndexConfig{Cluster: cluster, Client: client, Logger: klog}); err != nil {
			return nil, err
		}
		pods[cluster] = idx // run with the others
	}
	p.server.Pods = idx
	if k.PublishRootCert {
		pub, err := istio.NewRootCertPublisher(istio.RootCertConfig{Client: client, Bundler: authority, Name: k.RootCertName, Logger: klog})
		if err != nil {
			return nil, err
		}
		p.run = append(p.run, pub.Run)
	}
	if d := k.Istiod; d.Enabled {
		ic, err := istio.NewIstiodCert(istio.IstiodCertConfig{
			Client: client, Signer: issuer, Bundler: authority, Policy: issuer.Policy(), Cluster: cluster,
			Namespace: d.Namespace, ServiceAccount: d.ServiceAccount, SecretName: d.SecretName, DNSNames: d.DNSNames, TTL: d.TTL,
			Logger: klog,
		})
		if err != nil {
			return nil, err
		}
		p.run = append(p.run, ic.Run)
	}
	return p, nil
}
