package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lanyard-id/lanyard/ca"
)

// FileConfig is the YAML configuration of `lanyard ca`. Flags override it.
type FileConfig struct {
	TrustDomain string `yaml:"trustDomain"`
	// ListenAddr is the gRPC/TLS address; HTTPAddr serves health and metrics.
	ListenAddr string `yaml:"listenAddr"`
	HTTPAddr   string `yaml:"httpAddr"`
	// DataDir keeps the self-signed root and the SQLite store.
	DataDir string `yaml:"dataDir"`
	// BundleFile, when set, is kept up to date with the trust bundle (PEM).
	BundleFile      string   `yaml:"bundleFile"`
	ServingDNSNames []string `yaml:"servingDNSNames"`
	ServingIPs      []string `yaml:"servingIPs"`
	TTL             struct {
		Default time.Duration `yaml:"default"`
		Max     time.Duration `yaml:"max"`
		Agent   time.Duration `yaml:"agent"`
	} `yaml:"ttl"`
	Intermediate struct {
		TTL     time.Duration `yaml:"ttl"`
		KeyType string        `yaml:"keyType"`
		Curve   string        `yaml:"curve"`
		Size    int           `yaml:"size"`
	} `yaml:"intermediate"`
	Upstream UpstreamConfig  `yaml:"upstream"`
	Store    StoreConfig     `yaml:"store"`
	Clusters []ClusterConfig `yaml:"clusters"`
	Agents   struct {
		// Audience of tokens sent to the Lanyard API (default "lanyard").
		Audience string `yaml:"audience"`
		// ServiceAccounts ("namespace/name") that may attest as agents.
		ServiceAccounts []string `yaml:"serviceAccounts"`
		// TrustUnixAttestation accepts workloads identified by an agent's
		// unix (uid/gid) attestor: dev and non-Kubernetes hosts only.
		TrustUnixAttestation bool `yaml:"trustUnixAttestation"`
	} `yaml:"agents"`
	Policy ca.Policy `yaml:"policy"`
	// Profiling serves /debug/pprof/ on the HTTP address.
	Profiling bool `yaml:"profiling"`
	Log       struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"` // "text" or "json"
	} `yaml:"log"`
	// Istio turns on Istio's certificate API (see istio.go, docs/istio.md).
	Istio IstioConfig `yaml:"istio"`
	// Admin configures the admin API (see admin.go, docs/operations.md).
	Admin AdminFileConfig `yaml:"admin"`
}

// UpstreamConfig selects where the root comes from.
type UpstreamConfig struct {
	Type string `yaml:"type"` // "selfsigned" (default), "disk" or "vault"
	Disk struct {
		CertFile   string `yaml:"certFile"`
		KeyFile    string `yaml:"keyFile"`
		BundleFile string `yaml:"bundleFile"`
	} `yaml:"disk"`
	Vault VaultUpstreamConfig `yaml:"vault"` // upstream.go, docs/vault.md
}

// StoreConfig selects the store.
type StoreConfig struct {
	Type   string `yaml:"type"` // "sqlite" (default)
	SQLite struct {
		Path string `yaml:"path"` // default <dataDir>/lanyard.db
	} `yaml:"sqlite"`
}

// ClusterConfig says how tokens of one cluster are verified.
type ClusterConfig struct {
	Name   string `yaml:"name"`
	Issuer string `yaml:"issuer"`
	// Exactly one of: OIDC discovery, a JWKS URL or file, or TokenReview.
	DiscoveryURL string `yaml:"discoveryURL"`
	JWKSURL      string `yaml:"jwksURL"`
	JWKSFile     string `yaml:"jwksFile"`
	TokenReview  *struct {
		// Kubeconfig path; empty means in-cluster configuration. Its
		// user needs only `create tokenreviews` (authentication.k8s.io).
		Kubeconfig string `yaml:"kubeconfig"`
		// CacheTTL is how long a positive answer is reused, never past
		// the token's exp (default 10s; negative turns the cache off). A
		// token of a deleted pod is accepted for at most this long.
		CacheTTL time.Duration `yaml:"cacheTTL"`
	} `yaml:"tokenReview"`
	CACertFile string `yaml:"caCertFile"` // CA for the discovery/JWKS URL
	// Kubernetes, when set, lets the CA watch this cluster's pods: a
	// workload an agent identified with its k8s attestor is accepted only
	// when its pod runs on that agent's node.
	Kubernetes *struct {
		// Kubeconfig path; empty means in-cluster configuration. Its
		// user needs `get, list, watch pods`.
		Kubeconfig string `yaml:"kubeconfig"`
		// CheckBoundPod refuses a pod-bound token once its pod is gone
		// from the pod index (deleted or finished), or when the token does
		// not match it; verification of the token itself is unchanged.
		// Meant for offline (discovery/JWKS) verification, which otherwise
		// accepts such a token until its exp.
		CheckBoundPod bool `yaml:"checkBoundPod"`
	} `yaml:"kubernetes"`
}

func defaultConfig() FileConfig {
	var c FileConfig
	c.TrustDomain = "cluster.local"
	c.ListenAddr = ":8443"
	c.HTTPAddr = ":9090"
	c.DataDir = "/var/lib/lanyard"
	c.TTL.Default = time.Hour
	c.TTL.Max = 24 * time.Hour
	c.TTL.Agent = time.Hour
	c.Intermediate.TTL = 24 * time.Hour
	c.Upstream.Type = "selfsigned"
	c.Store.Type = "sqlite"
	c.Agents.Audience = "lanyard"
	c.Agents.ServiceAccounts = []string{"lanyard/lanyard-agent"}
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.Istio = defaultIstioConfig()
	return c
}

// loadConfig reads path over the defaults.
func loadConfig(path string) (FileConfig, error) {
	c := defaultConfig()
	err := decodeYAMLFile(path, &c)
	return c, err
}

// decodeYAMLFile decodes the file at path into v (nothing when path is
// empty). Unknown keys are an error, so a typo never silently falls back to
// a default.
func decodeYAMLFile(path string, v any) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	return nil
}

func (c *FileConfig) validate() error {
	if len(c.Clusters) == 0 {
		return errors.New("config: at least one cluster is required (clusters:)")
	}
	for i, cl := range c.Clusters {
		n := 0
		for _, set := range []bool{cl.DiscoveryURL != "", cl.JWKSURL != "", cl.JWKSFile != "", cl.TokenReview != nil} {
			if set {
				n++
			}
		}
		if cl.Name == "" || n != 1 {
			return fmt.Errorf("config: cluster %d needs a name and exactly one of discoveryURL, jwksURL, jwksFile, tokenReview", i)
		}
		if cl.TokenReview == nil && cl.Issuer == "" {
			return fmt.Errorf("config: cluster %q needs issuer", cl.Name)
		}
	}
	for _, ip := range c.ServingIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("config: servingIPs: %q is not an IP", ip)
		}
	}
	return c.Istio.validate(c.Clusters)
}
