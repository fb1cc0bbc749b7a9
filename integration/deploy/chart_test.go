package deploy

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var update = flag.Bool("update", false, "rewrite the golden configuration files in testdata/config")

func TestLint(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			require.Empty(t, lintChart(t, c.valuesOf(t)), "helm lint --strict")
		})
	}
}

func TestRender(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			r := mustRender(t, c.valuesOf(t))
			requireCommon(t, r)
			requireLeastPrivilege(t, r)
			require.Equal(t, c.rbac, rbacRules(r), "RBAC rules")
			c.check(t, r)
		})
	}
}

// TestConfigGolden keeps testdata/config/<case>/{ca,agent}.yaml equal to
// what the chart renders; cmd/lanyard's TestDeployConfigs parses them with
// the real loaders (unknown keys are errors there). Run with -update after
// changing the chart.
func TestConfigGolden(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			r := mustRender(t, c.valuesOf(t))
			files := map[string]string{"ca.yaml": r.configFile(t, "lanyard-ca-config", "ca.yaml")}
			if r.find("ConfigMap", "lanyard-agent-config") != nil {
				files["agent.yaml"] = r.configFile(t, "lanyard-agent-config", "agent.yaml")
			}
			for name, body := range files {
				files[name] = strings.TrimRight(body, "\n") + "\n"
			}
			dir := filepath.Join("testdata", "config", c.name)
			if *update {
				require.NoError(t, os.RemoveAll(dir))
				require.NoError(t, os.MkdirAll(dir, 0o755))
				for name, body := range files {
					require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
				}
				return
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err, "golden files missing: go test -run TestConfigGolden -update")
			var have []string
			for _, e := range entries {
				have = append(have, e.Name())
			}
			var want []string
			for name := range files {
				want = append(want, name)
			}
			sort.Strings(want)
			require.Equal(t, want, have, "golden files of %s (go test -run TestConfigGolden -update)", c.name)
			for name, body := range files {
				golden, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				require.Equal(t, string(golden), body, "%s/%s is stale: go test -run TestConfigGolden -update", c.name, name)
			}
		})
	}
}

// TestRenderRefuses: value combinations that cannot work are refused when
// rendering, with a message that says why.
func TestRenderRefuses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values string
		want   string
	}{
		{
			name:   "sqlite with replicas",
			values: `ca: {replicas: 3}`,
			want:   "ca.replicas=3 with store.type=sqlite",
		},
		{
			name: "shared selfsigned root without its seal key",
			values: `
ca: {replicas: 2}
store: {type: postgres, postgres: {existingSecret: pg}}`,
			want: "upstream.type=selfsigned with store.type=postgres needs upstream.selfsigned.sealKeySecret",
		},
		{
			name:   "postgres without its secret",
			values: `{store: {type: postgres}, upstream: {type: disk, disk: {existingSecret: root}}}`,
			want:   "store.type=postgres needs store.postgres.existingSecret",
		},
		{
			name:   "disk without its secret",
			values: `upstream: {type: disk}`,
			want:   "upstream.type=disk needs upstream.disk.existingSecret",
		},
		{
			name:   "vault without address",
			values: `upstream: {type: vault}`,
			want:   "upstream.type=vault needs upstream.vault.address",
		},
		{
			name:   "vault kubernetes auth without a role",
			values: `upstream: {type: vault, vault: {address: "https://vault:8200"}}`,
			want:   "upstream.vault.authMethod=kubernetes needs upstream.vault.authRole",
		},
		{
			name:   "vault approle without its secret",
			values: `upstream: {type: vault, vault: {address: "https://vault:8200", authMethod: approle, authRoleID: r}}`,
			want:   "upstream.vault.authMethod=approle needs upstream.vault.authRoleID and secretIDSecret",
		},
		{
			name:   "vault token without its secret",
			values: `upstream: {type: vault, vault: {address: "https://vault:8200", authMethod: token}}`,
			want:   "upstream.vault.authMethod=token needs upstream.vault.tokenSecret",
		},
		{
			name:   "sqlite without persistence",
			values: `ca: {persistence: {enabled: false}}`,
			want:   "ca.persistence.enabled=false with store.type=sqlite",
		},
		{
			name: "budget as large as the replicas",
			values: `
ca: {replicas: 2, podDisruptionBudget: {minAvailable: 2}}
store: {type: postgres, postgres: {existingSecret: pg}}
upstream: {type: disk, disk: {existingSecret: root}}`,
			want: "ca.podDisruptionBudget.minAvailable=2 must be below ca.replicas=2",
		},
		{
			name:   "trust bundle that is no PEM",
			values: `trustBundle: {pem: "hello"}`,
			want:   "trustBundle.pem holds no PEM certificate",
		},
		{
			name:   "impersonation without the pod index",
			values: `istio: {enabled: true, trustedNodeServiceAccounts: [istio-system/ztunnel], kubernetes: {enabled: false}}`,
			want:   "istio.trustedNodeServiceAccounts needs istio.kubernetes.enabled",
		},
		{
			name:   "bound-pod check without the pod index",
			values: `cluster: {tokenVerification: discovery, checkBoundPod: true, watchPods: false}`,
			want:   "cluster.checkBoundPod needs cluster.watchPods",
		},
		{
			// values.schema.json: a typo is an error, not a silent default.
			name:   "unknown key",
			values: `ca: {replica: 3}`,
			want:   "at '/ca': additional properties 'replica' not allowed",
		},
		{
			name:   "unknown store",
			values: `store: {type: mysql}`,
			want:   "at '/store/type': value must be one of 'sqlite', 'postgres'",
		},
		{
			name:   "zero replicas",
			values: `ca: {replicas: 0}`,
			want:   "at '/ca/replicas': minimum",
		},
		{
			name:   "bad duration",
			values: `ca: {ttl: {max: 24 hours}}`,
			want:   "at '/ca/ttl/max': '24 hours' does not match pattern",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderChart(t, values(t, tt.values))
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

// requireCommon checks what holds for every rendering: names, namespaces,
// labels, the image, and that every reference between objects resolves.
func requireCommon(t *testing.T, r *rendered) {
	t.Helper()
	for _, o := range r.objects {
		id := o.GetKind() + "/" + o.GetName()
		switch o.GetKind() {
		case "ClusterRole", "ClusterRoleBinding":
			require.Empty(t, o.GetNamespace(), id)
		case "Role", "RoleBinding":
			require.NotEmpty(t, o.GetNamespace(), id)
		default:
			require.Equal(t, namespace, o.GetNamespace(), id)
		}
		l := o.GetLabels()
		require.Equal(t, "lanyard", l["app.kubernetes.io/name"], id)
		require.Equal(t, releaseName, l["app.kubernetes.io/instance"], id)
		require.Equal(t, "Helm", l["app.kubernetes.io/managed-by"], id)
	}
	// Bindings name roles and service accounts of this rendering.
	for _, b := range append(r.ofKind("ClusterRoleBinding"), r.ofKind("RoleBinding")...) {
		kind := field(t, b, "roleRef.kind").(string)
		role := r.get(t, kind, field(t, b, "roleRef.name").(string))
		if kind == "Role" {
			require.Equal(t, role.GetNamespace(), b.GetNamespace())
		}
		for _, s := range field(t, b, "subjects").([]any) {
			sm := s.(map[string]any)
			require.Equal(t, "ServiceAccount", sm["kind"])
			require.Equal(t, namespace, sm["namespace"])
			r.get(t, "ServiceAccount", sm["name"].(string))
		}
	}
	// Workloads: their service account, config and image.
	for _, w := range append(r.ofKind("Deployment"), r.ofKind("DaemonSet")...) {
		spec := "spec.template.spec."
		r.get(t, "ServiceAccount", field(t, w, spec+"serviceAccountName").(string))
		for _, c := range field(t, w, spec+"containers").([]any) {
			require.Equal(t, "ghcr.io/lanyard-id/lanyard:0.1.0", c.(map[string]any)["image"])
		}
		for _, v := range field(t, w, spec+"volumes").([]any) {
			vm := v.(map[string]any)
			if cm, ok := vm["configMap"].(map[string]any); ok && strings.HasPrefix(cm["name"].(string), "lanyard-") &&
				strings.HasSuffix(cm["name"].(string), "-config") {
				r.get(t, "ConfigMap", cm["name"].(string))
			}
		}
		sel := field(t, w, "spec.selector.matchLabels").(map[string]any)
		tpl := field(t, w, "spec.template.metadata.labels").(map[string]any)
		for k, v := range sel {
			require.Equal(t, v, tpl[k], "%s/%s selector %s", w.GetKind(), w.GetName(), k)
		}
		require.NotEmpty(t, field(t, w, "spec.template.metadata.annotations.checksum/config"))
	}
	svc := r.get(t, "Service", "lanyard")
	require.Equal(t, map[string]any{
		"app.kubernetes.io/name": "lanyard", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "ca",
	}, field(t, svc, "spec.selector"))
}

// requireLeastPrivilege: no wildcard anywhere, no Secret through a
// ClusterRole, Secrets only in istiod's namespace and only by name for
// reads and writes, nothing but reading verbs on pods and namespaces.
func requireLeastPrivilege(t *testing.T, r *rendered) {
	t.Helper()
	for _, role := range append(r.ofKind("ClusterRole"), r.ofKind("Role")...) {
		id := role.GetKind() + "/" + role.GetName()
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		require.NotEmpty(t, rules, id)
		for _, rule := range rules {
			rm := rule.(map[string]any)
			for _, key := range []string{"apiGroups", "resources", "verbs", "resourceNames"} {
				for _, v := range strs(rm[key]) {
					require.NotContains(t, v, "*", "%s: wildcard in %s", id, key)
				}
			}
			require.Nil(t, rm["nonResourceURLs"], id)
			verbs := strs(rm["verbs"])
			for _, res := range strs(rm["resources"]) {
				switch res {
				case "secrets":
					require.Equal(t, "Role", role.GetKind(), "%s: secrets only through a Role", id)
					require.Equal(t, "istio-system", role.GetNamespace(), id)
					if !slices.Equal(verbs, []string{"create"}) {
						require.Equal(t, []string{"istiod-tls"}, strs(rm["resourceNames"]), "%s: secrets read by name only", id)
					}
					require.NotContains(t, verbs, "list", id)
					require.NotContains(t, verbs, "watch", id)
				case "pods", "namespaces":
					require.Subset(t, []string{"list", "watch"}, verbs, "%s: %s read-only", id, res)
				case "configmaps":
					if !slices.Equal(verbs, []string{"create"}) {
						require.Equal(t, []string{"istio-ca-root-cert"}, strs(rm["resourceNames"]), "%s: configmaps by name only", id)
					}
				case "tokenreviews":
					require.Equal(t, []string{"create"}, verbs, id)
				default:
					t.Fatalf("%s: unexpected resource %q", id, res)
				}
				for _, v := range verbs {
					require.NotContains(t, []string{"delete", "deletecollection", "patch", "escalate", "bind", "impersonate"}, v, id)
				}
			}
		}
	}
}

// rbacRules formats every rule of every Role and ClusterRole, one line per
// API group and resource: "ClusterRole/name: group/resource[names] [verbs]".
func rbacRules(r *rendered) []string {
	var out []string
	for _, role := range append(r.ofKind("ClusterRole"), r.ofKind("Role")...) {
		id := role.GetKind() + "/" + role.GetName()
		if role.GetNamespace() != "" {
			id = role.GetKind() + "/" + role.GetNamespace() + "/" + role.GetName()
		}
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		for _, rule := range rules {
			rm := rule.(map[string]any)
			names := ""
			if n := strs(rm["resourceNames"]); len(n) > 0 {
				names = "[" + strings.Join(n, ",") + "]"
			}
			for _, g := range strs(rm["apiGroups"]) {
				for _, res := range strs(rm["resources"]) {
					out = append(out, fmt.Sprintf("%s: %s/%s%s %v", id, g, res, names, strs(rm["verbs"])))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}
