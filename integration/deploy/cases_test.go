package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// renderCase is one values set the chart must accept. Every case is
// linted, rendered and checked, its CA and agent configurations are
// compared with the golden files under testdata/config/<name>/ (which
// cmd/lanyard parses with its own loaders), and with the k8sdryrun tag its
// manifests are applied to a real API server.
type renderCase struct {
	name string
	// values is a values file (YAML).
	values string
	// rootBundle sets trustBundle.pem to testdata/root.pem, as
	// `--set-file trustBundle.pem=root.pem` would.
	rootBundle bool
	// rbac is every rule of every (Cluster)Role, as rbacRules formats
	// them: exactly these and no more.
	rbac []string
	// check looks at the case's own fields.
	check func(t *testing.T, r *rendered)
}

var renderCases = []renderCase{
	{
		name:   "defaults",
		values: ``,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkDefaults,
	},
	{
		name: "ha-disk-postgres",
		values: `
ca:
  replicas: 3
  podDisruptionBudget: {minAvailable: 2}
store:
  type: postgres
  postgres: {existingSecret: lanyard-postgres}
upstream:
  type: disk
  disk: {existingSecret: lanyard-root, bundleKey: ca.crt}
`,
		rootBundle: true,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkHA,
	},
	{
		name: "ha-selfsigned-postgres",
		values: `
ca:
  replicas: 3
store:
  type: postgres
  postgres: {existingSecret: lanyard-postgres, tls: {caSecret: db-ca}}
upstream:
  selfsigned: {sealKeySecret: lanyard-root-seal}
`,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkHASelfSigned,
	},
	{
		name: "istio",
		values: `
istio:
  enabled: true
  trustedNodeServiceAccounts: [istio-system/ztunnel]
  kubernetes:
    istiod: {enabled: true, ttl: 24h}
`,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /configmaps [create]",
			"ClusterRole/lanyard-ca: /configmaps[istio-ca-root-cert] [list watch update]",
			"ClusterRole/lanyard-ca: /namespaces [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
			"Role/istio-system/lanyard-ca-istiod-tls: /secrets [create]",
			"Role/istio-system/lanyard-ca-istiod-tls: /secrets[istiod-tls] [get update]",
		},
		check: checkIstio,
	},
	{
		name: "agent-off",
		values: `
agent: {enabled: false}
`,
		rbac: []string{
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkAgentOff,
	},
	{
		// The least the CA can need: offline token verification and no pod
		// index leave it without any ClusterRole.
		name: "discovery-no-pods",
		values: `
cluster:
  name: prod
  tokenVerification: discovery
  discovery: {issuer: "https://kubernetes.default.svc.cluster.local"}
  watchPods: false
trustBundle: {existingConfigMap: corp-roots, existingConfigMapKey: roots.pem}
`,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
		},
		check: checkDiscovery,
	},
	{
		// Offline verification that still refuses the tokens of deleted pods.
		name: "discovery-bound-pod",
		values: `
cluster:
  tokenVerification: discovery
  discovery: {issuer: "https://oidc.example.com/cluster-1", url: "https://oidc.example.com/cluster-1", caCertFile: ""}
  checkBoundPod: true
`,
		rootBundle: true,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
		},
		check: checkBoundPod,
	},
	{
		name: "vault-postgres",
		values: `
ca: {replicas: 2}
store:
  type: postgres
  postgres: {existingSecret: lanyard-postgres, secretKey: url}
upstream:
  type: vault
  vault: {address: "https://vault.vault.svc:8200", namespace: mesh, caCertSecret: vault-ca, authRole: lanyard}
log: {level: debug, format: text}
cluster:
  tokenReview: {cacheTTL: 5s}
`,
		rootBundle: true,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkVault,
	},
	{
		name: "vault-approle",
		values: `
upstream:
  type: vault
  vault: {address: "https://vault.example:8200", pkiMount: pki-int, issuer: mesh, authMethod: approle, authRoleID: 6f1c, secretIDSecret: lanyard-approle}
`,
		rbac: []string{
			"ClusterRole/lanyard-agent: /pods [list watch]",
			"ClusterRole/lanyard-ca: /pods [list watch]",
			"ClusterRole/lanyard-ca: authentication.k8s.io/tokenreviews [create]",
		},
		check: checkVaultAppRole,
	},
}

// valuesOf parses the case's values and adds its files.
func (c renderCase) valuesOf(t testing.TB) map[string]any {
	t.Helper()
	v := values(t, c.values)
	if c.rootBundle {
		pem, err := os.ReadFile(filepath.Join("testdata", "root.pem"))
		require.NoError(t, err)
		tb, _ := v["trustBundle"].(map[string]any)
		if tb == nil {
			tb = map[string]any{}
		}
		tb["pem"] = string(pem)
		v["trustBundle"] = tb
	}
	return v
}
