package deploy

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test.
var chartDir = filepath.Join("..", "..", "deploy", "helm", "lanyard")

// Release name and namespace used for every rendering: the docs' names, so
// that the CA is lanyard.lanyard.svc.
// kubeVersion is the Kubernetes the chart is rendered for: the version
// of the API server the dry-run test applies it to.
const (
	releaseName = "lanyard"
	namespace   = "lanyard"
	kubeVersion = "v1.37.2"
)

func kubeVersionOf(t testing.TB) *chartutil.KubeVersion {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	require.NoError(t, err)
	return kv
}

// loadChart loads the chart from disk, as `helm install ./deploy/helm/lanyard`.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err, "load chart")
	return ch
}

// values parses a YAML values document (what -f values.yaml would pass).
func values(t testing.TB, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(doc), &v), "values")
	return v
}

// rendered is one rendering of the chart: its objects and NOTES.txt.
type rendered struct {
	objects []*unstructured.Unstructured
	notes   string
}

// renderChart renders the chart as `helm template` does (an install in
// client-only dry-run mode, so values.schema.json, kubeVersion and every
// template run), and decodes each manifest.
func renderChart(t testing.TB, vals map[string]any) (*rendered, error) {
	t.Helper()
	ch := loadChart(t)
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.KubeVersion = kubeVersionOf(t)
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	out := &rendered{notes: rel.Info.Notes}
	manifests := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(manifests))
	for k := range manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(manifests[k]), &m); err != nil {
			return nil, fmt.Errorf("decode manifest %s: %w\n%s", k, err, manifests[k])
		}
		if len(m) == 0 {
			continue
		}
		out.objects = append(out.objects, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// mustRender renders vals and fails the test on error.
func mustRender(t testing.TB, vals map[string]any) *rendered {
	t.Helper()
	r, err := renderChart(t, vals)
	require.NoError(t, err, "render")
	return r
}

// get returns the object of that kind and name, failing when it is missing.
func (r *rendered) get(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := r.find(kind, name)
	require.NotNil(t, o, "%s %s not rendered; have %v", kind, name, r.names())
	return o
}

func (r *rendered) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (r *rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// names is "Kind/name" of every object, for failure messages.
func (r *rendered) names() []string {
	var out []string
	for _, o := range r.objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

// configFile is a key of a rendered ConfigMap (the CA's or agent's YAML).
func (r *rendered) configFile(t testing.TB, configMap, key string) string {
	t.Helper()
	cm := r.get(t, "ConfigMap", configMap)
	s, ok, err := unstructured.NestedString(cm.Object, "data", key)
	require.NoError(t, err)
	require.True(t, ok, "ConfigMap %s has no key %s", configMap, key)
	return s
}

// field reads a nested field of o by a dotted path; list elements are
// chosen by their "name" ("spec.template.spec.containers[ca].image").
func field(t testing.TB, o *unstructured.Unstructured, path string) any {
	t.Helper()
	var cur any = o.Object
	for _, part := range strings.Split(path, ".") {
		key, sel, _ := strings.Cut(part, "[")
		sel = strings.TrimSuffix(sel, "]")
		m, ok := cur.(map[string]any)
		require.True(t, ok, "%s: %q is not an object in %s/%s", path, part, o.GetKind(), o.GetName())
		cur, ok = m[key]
		require.True(t, ok, "%s: no %q in %s/%s", path, key, o.GetKind(), o.GetName())
		if sel == "" {
			continue
		}
		list, ok := cur.([]any)
		require.True(t, ok, "%s: %q is not a list", path, key)
		cur = nil
		for _, e := range list {
			if em, ok := e.(map[string]any); ok && em["name"] == sel {
				cur = em
				break
			}
		}
		require.NotNil(t, cur, "%s: no element named %q", path, sel)
	}
	return cur
}

// lintChart lints the chart with vals as `helm lint --strict` does, and
// returns every finding above INFO (INFO findings are logged).
func lintChart(t testing.TB, vals map[string]any) []string {
	t.Helper()
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	l.KubeVersion = kubeVersionOf(t)
	res := l.Run([]string{chartDir}, vals)
	var out []string
	for _, m := range res.Messages {
		if m.Severity <= support.InfoSev {
			t.Logf("lint: %v", m)
			continue
		}
		out = append(out, m.Error())
	}
	for _, err := range res.Errors {
		out = append(out, err.Error())
	}
	require.Equal(t, 1, res.TotalChartsLinted, "charts linted")
	return out
}
