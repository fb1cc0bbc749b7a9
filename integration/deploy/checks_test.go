package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The checks of each render case (cases_test.go).

// config decodes a rendered configuration file into a generic map.
func (r *rendered) config(t testing.TB, configMap, key string) *unstructured.Unstructured {
	t.Helper()
	m := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(r.configFile(t, configMap, key)), &m))
	return &unstructured.Unstructured{Object: m}
}

func checkDefaults(t *testing.T, r *rendered) {
	// The CA: one replica on a claim (SQLite and the self-signed root).
	ca := r.get(t, "Deployment", "lanyard-ca")
	require.EqualValues(t, 1, field(t, ca, "spec.replicas"))
	require.Equal(t, "Recreate", field(t, ca, "spec.strategy.type"))
	require.Nil(t, r.find("PodDisruptionBudget", "lanyard-ca"), "no budget for one replica")
	pvc := r.get(t, "PersistentVolumeClaim", "lanyard-ca-data")
	require.Equal(t, "keep", pvc.GetAnnotations()["helm.sh/resource-policy"])
	require.Equal(t, "lanyard-ca-data", field(t, ca, "spec.template.spec.volumes[data].persistentVolumeClaim.claimName"))
	requireHardenedCA(t, ca)

	svc := r.get(t, "Service", "lanyard")
	require.EqualValues(t, 8443, field(t, svc, "spec.ports[grpc].port"))
	require.Equal(t, "grpc", field(t, svc, "spec.ports[grpc].targetPort"))
	require.EqualValues(t, 9090, field(t, svc, "spec.ports[http-metrics].port"))

	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, "cluster.local", field(t, cfg, "trustDomain"))
	require.Equal(t, "selfsigned", field(t, cfg, "upstream.type"))
	require.Equal(t, "sqlite", field(t, cfg, "store.type"))
	require.Contains(t, field(t, cfg, "servingDNSNames"), "lanyard.lanyard.svc")
	require.Equal(t, []any{"lanyard/lanyard-agent"}, field(t, cfg, "agents.serviceAccounts"))
	require.Equal(t, "lanyard", field(t, cfg, "agents.audience"))
	require.Equal(t, map[string]any{"kubeconfig": ""}, field(t, cfg, "clusters[kubernetes].tokenReview"))
	require.Equal(t, map[string]any{"kubeconfig": ""}, field(t, cfg, "clusters[kubernetes].kubernetes"))
	require.Equal(t, false, field(t, cfg, "istio.enabled"))

	// The agent.
	ds := r.get(t, "DaemonSet", "lanyard-agent")
	spec := "spec.template.spec."
	require.Equal(t, true, field(t, ds, spec+"hostPID"))
	require.Equal(t, "RollingUpdate", field(t, ds, "spec.updateStrategy.type"))
	require.Equal(t, []any{map[string]any{"operator": "Exists"}}, field(t, ds, spec+"tolerations"))
	require.Equal(t, "spec.nodeName", field(t, ds, spec+"containers[agent].env[NODE_NAME].valueFrom.fieldRef.fieldPath"))
	require.Equal(t, map[string]any{
		"audience": "lanyard", "expirationSeconds": float64(3600), "path": "token",
	}, field(t, ds, spec+"volumes[token].projected.sources").([]any)[0].(map[string]any)["serviceAccountToken"])
	require.Equal(t, "/var/run/secrets/lanyard", field(t, ds, spec+"containers[agent].volumeMounts[token].mountPath"))
	require.Equal(t, map[string]any{"path": "/run/lanyard", "type": "DirectoryOrCreate"}, field(t, ds, spec+"volumes[socket-dir].hostPath"))
	require.Equal(t, "/run/lanyard", field(t, ds, spec+"containers[agent].volumeMounts[socket-dir].mountPath"))
	require.Equal(t, map[string]any{"path": "/var/lib/lanyard-agent", "type": "DirectoryOrCreate"}, field(t, ds, spec+"volumes[cache].hostPath"))
	require.Equal(t, "/healthz", field(t, ds, spec+"containers[agent].livenessProbe.httpGet.path"))
	require.Equal(t, "/readyz", field(t, ds, spec+"containers[agent].readinessProbe.httpGet.path"))
	require.Equal(t, []any{"ALL"}, field(t, ds, spec+"containers[agent].securityContext.capabilities.drop"))
	require.Equal(t, true, field(t, ds, spec+"containers[agent].securityContext.readOnlyRootFilesystem"))
	require.Equal(t, false, field(t, ds, spec+"containers[agent].securityContext.allowPrivilegeEscalation"))
	// No root yet: the agents wait for the bundle ConfigMap the NOTES say
	// how to fill.
	requireAgentBundle(t, r, "lanyard-trust-bundle", "bundle.pem")
	require.Nil(t, r.find("ConfigMap", "lanyard-trust-bundle"))
	require.Contains(t, r.notes, "--set-file trustBundle.pem=bundle.pem")

	acfg := r.config(t, "lanyard-agent-config", "agent.yaml")
	require.Equal(t, "dns:///lanyard-headless.lanyard.svc:8443", field(t, acfg, "caAddr"), "every replica, round robin")
	require.Equal(t, "/etc/lanyard/bundle/bundle.pem", field(t, acfg, "bundleFile"))
	require.Equal(t, "/var/run/secrets/lanyard/token", field(t, acfg, "tokenFile"))
	require.Equal(t, "/run/lanyard/agent.sock", field(t, acfg, "socketPath"))
	require.Equal(t, "kubernetes", field(t, acfg, "cluster"))
	require.Equal(t, "", field(t, acfg, "attestors.k8s.nodeName"), "from $NODE_NAME")
}

func checkHA(t *testing.T, r *rendered) {
	ca := r.get(t, "Deployment", "lanyard-ca")
	require.EqualValues(t, 3, field(t, ca, "spec.replicas"))
	require.Equal(t, "RollingUpdate", field(t, ca, "spec.strategy.type"))
	require.EqualValues(t, 0, field(t, ca, "spec.strategy.rollingUpdate.maxUnavailable"))
	pdb := r.get(t, "PodDisruptionBudget", "lanyard-ca")
	require.EqualValues(t, 2, field(t, pdb, "spec.minAvailable"))
	require.Equal(t, field(t, ca, "spec.selector.matchLabels"), field(t, pdb, "spec.selector.matchLabels"))
	// Nothing in dataDir must survive: no claim for three replicas to fight over.
	require.Nil(t, r.find("PersistentVolumeClaim", "lanyard-ca-data"))
	require.Equal(t, map[string]any{}, field(t, ca, "spec.template.spec.volumes[data].emptyDir"))
	require.NotNil(t, field(t, ca, "spec.template.spec.affinity.podAntiAffinity"))
	requireHardenedCA(t, ca)
	// The root from the Secret, the DSN from its Secret.
	require.Equal(t, "lanyard-root", field(t, ca, "spec.template.spec.volumes[upstream].secret.secretName"))
	require.Equal(t, "/etc/lanyard/upstream", field(t, ca, "spec.template.spec.containers[ca].volumeMounts[upstream].mountPath"))
	require.Equal(t, "lanyard-postgres", field(t, ca, "spec.template.spec.volumes[postgres].secret.secretName"))

	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, map[string]any{
		"type": "disk",
		"disk": map[string]any{
			"certFile": "/etc/lanyard/upstream/tls.crt", "keyFile": "/etc/lanyard/upstream/tls.key",
			"bundleFile": "/etc/lanyard/upstream/ca.crt",
		},
	}, field(t, cfg, "upstream"))
	require.Equal(t, map[string]any{
		"type":      "postgres",
		"postgres":  map[string]any{"dsnFile": "/var/run/secrets/lanyard/postgres/dsn", "maxConns": 16.0, "statementTimeout": "5s"},
		"retention": map[string]any{"keep": "720h"},
	}, field(t, cfg, "store"))
	require.NotContains(t, r.notes, "not implemented")
	hl := r.get(t, "Service", "lanyard-headless")
	require.Equal(t, "None", field(t, hl, "spec.clusterIP"))
	require.Equal(t, field(t, ca, "spec.selector.matchLabels"), field(t, hl, "spec.selector"))

	// The bundle ConfigMap from --set-file, mounted by the agents.
	root, err := os.ReadFile(filepath.Join("testdata", "root.pem"))
	require.NoError(t, err)
	require.Equal(t, string(root), r.configFile(t, "lanyard-trust-bundle", "bundle.pem"))
	requireAgentBundle(t, r, "lanyard-trust-bundle", "bundle.pem")
	require.NotContains(t, r.notes, "wait for their bootstrap trust bundle")
}

func checkIstio(t *testing.T, r *rendered) {
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, true, field(t, cfg, "istio.enabled"))
	require.Equal(t, "istio-ca", field(t, cfg, "istio.audience"))
	require.Equal(t, map[string]any{"Kubernetes": "kubernetes"}, field(t, cfg, "istio.clusterAliases"))
	require.Equal(t, []any{"istio-system/ztunnel"}, field(t, cfg, "istio.trustedNodeServiceAccounts"))
	require.Equal(t, true, field(t, cfg, "istio.kubernetes.publishRootCert"))
	require.Equal(t, "istio-ca-root-cert", field(t, cfg, "istio.kubernetes.rootCertConfigMap"))
	require.Equal(t, map[string]any{
		"enabled": true, "namespace": "istio-system", "serviceAccount": "istiod", "secretName": "istiod-tls",
		"dnsNames": []any{"istiod.istio-system.svc"}, "ttl": "24h",
	}, field(t, cfg, "istio.kubernetes.istiod"))
	// The rule istiod's certificate needs comes first.
	require.Equal(t, []any{map[string]any{
		"namespace": "istio-system", "serviceAccount": "istiod", "dnsNames": []any{"istiod.istio-system.svc"},
	}}, field(t, cfg, "policy.rules"))
	// The agents bootstrap from the root the CA publishes.
	requireAgentBundle(t, r, "istio-ca-root-cert", "root-cert.pem")
	require.Nil(t, r.find("ConfigMap", "lanyard-trust-bundle"))
	require.Contains(t, r.notes, "lanyard.lanyard.svc:8443")
	require.NotContains(t, r.notes, "wait for their bootstrap trust bundle")
}

func checkAgentOff(t *testing.T, r *rendered) {
	for _, kind := range []string{"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap"} {
		require.Nil(t, r.find(kind, "lanyard-agent"), kind)
	}
	require.Nil(t, r.find("ConfigMap", "lanyard-agent-config"))
	require.NotContains(t, r.notes, "trust bundle")
	r.get(t, "Deployment", "lanyard-ca")
}

func checkDiscovery(t *testing.T, r *rendered) {
	require.Nil(t, r.find("ClusterRole", "lanyard-ca"))
	require.Nil(t, r.find("ClusterRoleBinding", "lanyard-ca"))
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, []any{map[string]any{
		"name": "prod", "issuer": "https://kubernetes.default.svc.cluster.local",
		"discoveryURL": "https://kubernetes.default.svc.cluster.local",
		"caCertFile":   "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
	}}, field(t, cfg, "clusters"))
	acfg := r.config(t, "lanyard-agent-config", "agent.yaml")
	require.Equal(t, "prod", field(t, acfg, "cluster"))
	requireAgentBundle(t, r, "corp-roots", "roots.pem")
}

func checkBoundPod(t *testing.T, r *rendered) {
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, []any{map[string]any{
		"name": "kubernetes", "issuer": "https://oidc.example.com/cluster-1",
		"discoveryURL": "https://oidc.example.com/cluster-1", "caCertFile": "",
		"kubernetes": map[string]any{"kubeconfig": "", "checkBoundPod": true},
	}}, field(t, cfg, "clusters"))
}

func checkVault(t *testing.T, r *rendered) {
	ca := r.get(t, "Deployment", "lanyard-ca")
	c := "spec.template.spec.containers[ca]."
	require.Equal(t, "/etc/lanyard/vault", field(t, ca, c+"volumeMounts[vault-ca].mountPath"))
	require.Equal(t, "/var/run/secrets/lanyard/vault", field(t, ca, c+"volumeMounts[vault-auth].mountPath"))
	require.Equal(t, "vault-ca", field(t, ca, "spec.template.spec.volumes[vault-ca].secret.secretName"))
	require.Equal(t, []any{map[string]any{"serviceAccountToken": map[string]any{"audience": "vault", "expirationSeconds": float64(3600), "path": "token"}}},
		field(t, ca, "spec.template.spec.volumes[vault-auth].projected.sources"))
	require.Equal(t, []any{map[string]any{"key": "url", "path": "dsn"}}, field(t, ca, "spec.template.spec.volumes[postgres].secret.items"))
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, map[string]any{"type": "vault", "vault": map[string]any{
		"address": "https://vault.vault.svc:8200", "namespace": "mesh", "caFile": "/etc/lanyard/vault/ca.crt",
		"mount": "pki", "issuer": "",
		"auth": map[string]any{"method": "kubernetes", "mount": "", "role": "lanyard", "serviceAccountTokenFile": "/var/run/secrets/lanyard/vault/token"},
	}}, field(t, cfg, "upstream"))
	require.Equal(t, map[string]any{"level": "debug", "format": "text"}, field(t, cfg, "log"))
	require.Equal(t, map[string]any{"kubeconfig": "", "cacheTTL": "5s"}, field(t, cfg, "clusters[kubernetes].tokenReview"))
	require.NotContains(t, r.notes, "upstream.type=vault")
	r.get(t, "PodDisruptionBudget", "lanyard-ca")
}

func checkVaultAppRole(t *testing.T, r *rendered) {
	ca := r.get(t, "Deployment", "lanyard-ca")
	require.Equal(t, "lanyard-approle", field(t, ca, "spec.template.spec.volumes[vault-auth].secret.secretName"))
	require.Equal(t, []any{map[string]any{"key": "secret-id", "path": "secret-id"}}, field(t, ca, "spec.template.spec.volumes[vault-auth].secret.items"))
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, map[string]any{"type": "vault", "vault": map[string]any{
		"address": "https://vault.example:8200", "namespace": "", "caFile": "",
		"mount": "pki-int", "issuer": "mesh",
		"auth": map[string]any{"method": "approle", "mount": "", "roleID": "6f1c", "secretIDFile": "/var/run/secrets/lanyard/vault/secret-id"},
	}}, field(t, cfg, "upstream"))
}

// requireHardenedCA: the CA runs as non-root on a read-only root file
// system with no capability, and is probed on its health endpoints.
func requireHardenedCA(t *testing.T, ca *unstructured.Unstructured) {
	t.Helper()
	spec := "spec.template.spec."
	require.Equal(t, true, field(t, ca, spec+"securityContext.runAsNonRoot"))
	require.EqualValues(t, 65532, field(t, ca, spec+"securityContext.runAsUser"))
	require.Equal(t, "RuntimeDefault", field(t, ca, spec+"securityContext.seccompProfile.type"))
	c := spec + "containers[ca]."
	require.Equal(t, []any{"ALL"}, field(t, ca, c+"securityContext.capabilities.drop"))
	require.Equal(t, true, field(t, ca, c+"securityContext.readOnlyRootFilesystem"))
	require.Equal(t, false, field(t, ca, c+"securityContext.allowPrivilegeEscalation"))
	require.Equal(t, "/readyz", field(t, ca, c+"readinessProbe.httpGet.path"))
	require.Equal(t, "/healthz", field(t, ca, c+"livenessProbe.httpGet.path"))
	require.Equal(t, "http-metrics", field(t, ca, c+"readinessProbe.httpGet.port"))
	require.EqualValues(t, 8443, field(t, ca, c+"ports[grpc].containerPort"))
	require.EqualValues(t, 9090, field(t, ca, c+"ports[http-metrics].containerPort"))
	require.Equal(t, "/var/lib/lanyard", field(t, ca, c+"volumeMounts[data].mountPath"))
	require.Equal(t, []any{"ca", "--config", "/etc/lanyard/config/ca.yaml"}, field(t, ca, c+"args"))
	require.Equal(t, "lanyard-ca", field(t, ca, spec+"serviceAccountName"))
	for _, v := range field(t, ca, spec+"volumes").([]any) {
		require.Nil(t, v.(map[string]any)["projected"], "the CA needs no projected token of its own")
	}
}

// requireAgentBundle: the agents mount key of ConfigMap name as their
// bootstrap bundle.pem.
func requireAgentBundle(t *testing.T, r *rendered, name, key string) {
	t.Helper()
	ds := r.get(t, "DaemonSet", "lanyard-agent")
	vol := "spec.template.spec.volumes[bundle].configMap."
	require.Equal(t, name, field(t, ds, vol+"name"))
	require.Equal(t, []any{map[string]any{"key": key, "path": "bundle.pem"}}, field(t, ds, vol+"items"))
	require.Equal(t, "/etc/lanyard/bundle", field(t, ds, "spec.template.spec.containers[agent].volumeMounts[bundle].mountPath"))
}

// checkHASelfSigned: replicas share a self-signed root kept in the
// database, sealed with the key from a Secret; TLS to the database is
// verify-full against the CA from a Secret.
func checkHASelfSigned(t *testing.T, r *rendered) {
	ca := r.get(t, "Deployment", "lanyard-ca")
	require.EqualValues(t, 3, field(t, ca, "spec.replicas"))
	require.Nil(t, r.find("PersistentVolumeClaim", "lanyard-ca-data"), "the root is in the database")
	require.NotNil(t, r.find("PodDisruptionBudget", "lanyard-ca"))
	require.NotNil(t, field(t, ca, "spec.template.spec.affinity.podAntiAffinity"))
	require.Equal(t, "lanyard-root-seal", field(t, ca, "spec.template.spec.volumes[root-seal].secret.secretName"))
	require.Equal(t, "/var/run/secrets/lanyard/root-seal", field(t, ca, "spec.template.spec.containers[ca].volumeMounts[root-seal].mountPath"))
	require.Equal(t, "db-ca", field(t, ca, "spec.template.spec.volumes[postgres-ca].secret.secretName"))
	cfg := r.config(t, "lanyard-ca-config", "ca.yaml")
	require.Equal(t, map[string]any{"type": "selfsigned", "selfsigned": map[string]any{
		"sealKeyFile": "/var/run/secrets/lanyard/root-seal/key"}}, field(t, cfg, "upstream"))
	require.Equal(t, "verify-full", field(t, cfg, "store.postgres.sslMode"))
	require.Equal(t, "/var/run/secrets/lanyard/postgres-ca/ca.crt", field(t, cfg, "store.postgres.caFile"))
}
