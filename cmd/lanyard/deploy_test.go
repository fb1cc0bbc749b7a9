package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// deployConfigs holds the CA and agent configurations the Helm chart
// (deploy/helm/lanyard) renders for each of its test value sets, one
// directory per set. integration/deploy keeps them equal to the chart's
// output (go test -run TestConfigGolden -update there).
var deployConfigs = filepath.Join("..", "..", "integration", "deploy", "testdata", "config")

// TestDeployConfigs parses what the chart renders with the loaders of
// `lanyard ca` and `lanyard agent` (unknown keys are errors) and checks
// it as they would before starting.
func TestDeployConfigs(t *testing.T) {
	sets, err := os.ReadDir(deployConfigs)
	require.NoError(t, err)
	require.NotEmpty(t, sets)
	for _, set := range sets {
		t.Run(set.Name(), func(t *testing.T) {
			dir := filepath.Join(deployConfigs, set.Name())
			cfg, err := loadConfig(filepath.Join(dir, "ca.yaml"))
			require.NoError(t, err)
			require.NoError(t, cfg.validate())
			require.NoError(t, cfg.Policy.Validate())
			_, err = spiffeid.TrustDomainFromString(cfg.TrustDomain)
			require.NoError(t, err)
			require.Positive(t, cfg.TTL.Default)
			require.GreaterOrEqual(t, cfg.TTL.Max, cfg.TTL.Default)
			require.Contains(t, []string{"selfsigned", "disk", "vault"}, cfg.Upstream.Type)
			require.Contains(t, []string{"sqlite", "postgres"}, cfg.Store.Type)
			if cfg.Upstream.Type == "vault" { // its Config is checked as `lanyard ca` would
				v := cfg.Upstream.Vault
				v.CAFile = "" // mounted from a Secret in the pod
				_, err := buildVaultUpstream(v, slog.New(slog.DiscardHandler))
				require.NoError(t, err)
			}

			path := filepath.Join(dir, "agent.yaml")
			if _, err := os.Stat(path); os.IsNotExist(err) {
				return // the chart's agent is off
			}
			acfg, err := loadAgentConfig(path)
			require.NoError(t, err)
			require.Equal(t, cfg.TrustDomain, acfg.TrustDomain)
			require.NotEmpty(t, acfg.CAAddr)
			require.NotEmpty(t, acfg.BundleFile)
			require.NotNil(t, acfg.Attestors.K8s)
			_, err = strconv.ParseUint(acfg.SocketMode, 8, 32)
			require.NoError(t, err)
			require.Contains(t, cfg.Agents.ServiceAccounts, "lanyard/lanyard-agent")
			var clusters []string
			for _, cl := range cfg.Clusters {
				clusters = append(clusters, cl.Name)
			}
			require.Contains(t, clusters, acfg.Cluster, "the agent names a cluster the CA knows")
		})
	}
}
