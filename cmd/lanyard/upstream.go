package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lanyard-id/lanyard/ca/upstream"
	"github.com/lanyard-id/lanyard/ca/upstream/vault"
)

// VaultUpstreamConfig is the upstream: vault: section (docs/vault.md).
type VaultUpstreamConfig struct {
	// Address of Vault (https://vault.example:8200).
	Address string `yaml:"address"`
	// CAFile verifies Vault's TLS certificate (default: system roots).
	CAFile string `yaml:"caFile"`
	// Namespace is the Vault Enterprise namespace.
	Namespace string `yaml:"namespace"`
	// Mount of the PKI engine (default pki); Issuer an issuer of it
	// (default: the mount's default issuer).
	Mount  string `yaml:"mount"`
	Issuer string `yaml:"issuer"`
	// BundleFile pins the roots (default: Vault's root, read and pinned at
	// start).
	BundleFile string `yaml:"bundleFile"`
	Auth       struct {
		// Method: token (default), approle or kubernetes.
		Method string `yaml:"method"`
		// Mount of the auth method (default approle / kubernetes).
		Mount     string `yaml:"mount"`
		TokenFile string `yaml:"tokenFile"`
		TokenEnv  string `yaml:"tokenEnv"`
		RoleID    string `yaml:"roleID"`
		// SecretIDFile or SecretIDEnv: the AppRole secret ID.
		SecretIDFile string `yaml:"secretIDFile"`
		SecretIDEnv  string `yaml:"secretIDEnv"`
		// Role and the projected service-account token (kubernetes).
		Role                    string `yaml:"role"`
		ServiceAccountTokenFile string `yaml:"serviceAccountTokenFile"`
	} `yaml:"auth"`
}

func buildVaultUpstream(c VaultUpstreamConfig, log *slog.Logger) (upstream.Authority, error) {
	a := c.Auth
	return vault.New(vault.Config{
		Address: c.Address, CAFile: c.CAFile, Namespace: c.Namespace, Mount: c.Mount, Issuer: c.Issuer,
		BundleFile: c.BundleFile, Logger: log,
		Auth: vault.AuthConfig{
			Method: a.Method, Mount: a.Mount, TokenFile: a.TokenFile, TokenEnv: a.TokenEnv,
			RoleID: a.RoleID, SecretIDFile: a.SecretIDFile, SecretIDEnv: a.SecretIDEnv,
			Role: a.Role, ServiceAccountTokenFile: a.ServiceAccountTokenFile,
		},
	})
}

// upstreamRunner is an upstream with a long-lived part (Vault's login).
type upstreamRunner interface {
	Run(ctx context.Context) error
}

func closeUpstream(up upstream.Authority) {
	if c, ok := up.(interface{ Close() }); ok {
		c.Close()
	}
}

// registerUpstreamMetrics exports the Vault upstream's counters:
// lanyard_ca_upstream_vault_logins_total, _token_renewals_total and
// lanyard_ca_upstream_refused_total (intermediates that failed the checks).
func registerUpstreamMetrics(reg prometheus.Registerer, up upstream.Authority) {
	v, ok := up.(*vault.Upstream)
	if !ok {
		return
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lanyard_ca_upstream_vault_logins_total", Help: "Logins to Vault."},
			func() float64 { return float64(v.Stats().Logins) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lanyard_ca_upstream_vault_token_renewals_total", Help: "Vault token renewals."},
			func() float64 { return float64(v.Stats().TokenRenewals) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lanyard_ca_upstream_refused_total", Help: "Intermediates the upstream signed but the CA refused (wrong key, not a CA, no SPIFFE URI SAN, or not chaining to the pinned root)."},
			func() float64 { return float64(v.Stats().Refused) }),
	)
}
