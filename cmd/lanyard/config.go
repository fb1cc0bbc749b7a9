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
		// Backdate sets certificates' NotBefore this far back for clock
		// skew (default 5m, at most 1h; never more than a quarter of a
		// certificate's TTL).
		Backdate time.Duration `yaml:"backdate"`
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
	Type       string `yaml:"type"` // "selfsigned" (default), "disk" or "vault"
	SelfSigned struct {
		// SealKeyFile holds the 32-byte key (raw or base64) that seals the
		// root key in a PostgreSQL store, where replicas share one root.
		// Required with store.type postgres; unused with SQLite, where the
		// root stays in dataDir/root.
		SealKeyFile string `yaml:"sealKeyFile"`
	} `yaml:"selfsigned"`
	Disk struct {
		CertFile   string `yaml:"certFile"`
		KeyFile    string `yaml:"keyFile"`
		BundleFile string `yaml:"bundleFile"`
	} `yaml:"disk"`
	Vault VaultUpstreamConfig `yaml:"vault"` // upstream.go, docs/vault.md
}

// StoreConfig selects the store.
type StoreConfig struct {
	Type   string `yaml:"type"` // "sqlite" (default) or "postgres" (several replicas)
	SQLite struct {
		Path string `yaml:"path"` // default <dataDir>/lanyard.db
	} `yaml:"sqlite"`
	Postgres PostgresConfig `yaml:"postgres"`
	// Retention of certificate records past their expiry (both stores).
	Retention struct {
		// Keep is how long a record is kept past NotAfter (default 720h,
		// 30 days). Audit events are kept.
		Keep time.Duration `yaml:"keep"`
		// Interval between pruning rounds (default 10m).
		Interval time.Duration `yaml:"interval"`
		// BatchSize bounds the records one transaction deletes (default 500).
		BatchSize int `yaml:"batchSize"`
	} `yaml:"retention"`
}

// PostgresConfig configures the PostgreSQL store. What the DSN leaves out
// comes from the standard PG* environment variables (PGHOST, PGUSER,
// PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, ...).
type PostgresConfig struct {
	// DSN is a libpq connection string or URL. The environment variable
	// LANYARD_POSTGRES_DSN overrides it.
	DSN string `yaml:"dsn"`
	// DSNFile, when set, holds the DSN (a mounted Secret); it wins over DSN.
	DSNFile string `yaml:"dsnFile"`
	// MaxConns bounds the pool (default 16).
	MaxConns int32 `yaml:"maxConns"`
	// StatementTimeout bounds every statement (default 5s).
	StatementTimeout time.Duration `yaml:"statementTimeout"`
	// SSLMode and CAFile override the DSN's sslmode and sslrootcert:
	// use verify-full with the database server's CA.
	SSLMode string `yaml:"sslMode"`
	CAFile  string `yaml:"caFile"`
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
	// Keys tunes offline (discovery/JWKS) verification; zero values take
	// the defaults of tokens.JWKSConfig.
	Keys struct {
		// FetchTimeout bounds one fetch of the discovery document and key
		// set (default 5s, at most 1m).
		FetchTimeout time.Duration `yaml:"fetchTimeout"`
		// RetryAfterFailure is the least time between two fetches, and so
		// how long a failing endpoint is answered from the negative
		// cache (default 10s).
		RetryAfterFailure time.Duration `yaml:"retryAfterFailure"`
		// MaxAge is how long keys are used after the last successful
		// fetch while refreshes fail; then this cluster's tokens answer
		// Unavailable (default 24h).
		MaxAge time.Duration `yaml:"maxAge"`
		// JWKSHosts are hosts (host or host:port) besides the discovery
		// document's own that its jwks_uri may name (default none).
		JWKSHosts []string `yaml:"jwksHosts"`
		// Leeway is the clock skew allowed on a token's exp, nbf and iat
		// (default 60s, at most 5m).
		Leeway time.Duration `yaml:"leeway"`
	} `yaml:"keys"`
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
		if cl.TokenReview != nil && (cl.Keys.FetchTimeout != 0 || cl.Keys.RetryAfterFailure != 0 ||
			cl.Keys.MaxAge != 0 || len(cl.Keys.JWKSHosts) > 0 || cl.Keys.Leeway != 0) {
			return fmt.Errorf("config: cluster %q: keys: applies to discoveryURL, jwksURL and jwksFile, not tokenReview", cl.Name)
		}
	}
	for _, ip := range c.ServingIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("config: servingIPs: %q is not an IP", ip)
		}
	}
	return c.Istio.validate(c.Clusters)
}
