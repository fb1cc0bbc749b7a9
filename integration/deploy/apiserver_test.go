package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/lanyard-id/lanyard/integration/harness/kube"
)

// fieldManager is the server-side apply field manager of these tests.
const fieldManager = "lanyard-test"

// warnings collects the API server's warnings (Warning headers: deprecated
// APIs, Pod Security, unknown fields) per request.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// take returns the warnings since the last call.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// applier applies unstructured objects with server-side apply.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	warn   *warnings
}

func newApplier(t *testing.T, k *kube.Kube) *applier {
	t.Helper()
	w := &warnings{}
	cfg := rest.CopyConfig(k.Config)
	cfg.WarningHandler = w
	hc, err := rest.HTTPClientFor(cfg)
	require.NoError(t, err)
	t.Cleanup(hc.CloseIdleConnections)
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	require.NoError(t, err)
	disc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
	require.NoError(t, err)
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)), warn: w}
}

// apply applies o; dryRun asks the server to run every admission and
// validation step but store nothing.
func (a *applier) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("map %s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, o.GetName(), o, opts)
	return err
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), kube.CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestAPIServerAcceptsManifests applies every manifest of every render
// case to a real kube-apiserver with server-side apply in dry-run mode:
// schema validation (unknown fields are errors with server-side apply),
// defaulting and admission all run. The release namespace warns at the
// "restricted" Pod Security level, so the CA's pod template must raise no
// warning; the agent needs hostPID and hostPath and is expected to.
func TestAPIServerAcceptsManifests(t *testing.T) {
	k := kube.StartKube(t, kube.Options{Name: "deploy"})
	k.Namespace(t, "istio-system")
	_, err := k.Client.CoreV1().Namespaces().Create(callCtx(t), podSecurityNamespace(namespace), metav1.CreateOptions{})
	require.NoError(t, err)
	a := newApplier(t, k)
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			r := mustRender(t, c.valuesOf(t))
			for _, o := range r.objects {
				id := o.GetKind() + "/" + o.GetName()
				require.NoError(t, a.apply(callCtx(t), o, true), "dry-run apply %s", id)
				warns := a.warn.take()
				if o.GetKind() == "DaemonSet" {
					t.Logf("%s: Pod Security warnings (expected: the agent needs a privileged namespace): %v", id, warns)
					require.NotEmpty(t, warns, "%s: the restricted level refuses hostPID and hostPath", id)
					joined := strings.Join(warns, "\n")
					require.Contains(t, joined, "hostPID")
					require.Contains(t, joined, "hostPath")
					continue
				}
				require.Empty(t, warns, "%s: API server warnings", id)
			}
		})
	}
}

// podSecurityNamespace is a namespace whose pods are checked against the
// restricted Pod Security Standard, with warnings only.
func podSecurityNamespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/warn":         "restricted",
		"pod-security.kubernetes.io/warn-version": "latest",
	}}}
}

// TestRBACAgainstAPIServer applies the Istio case's manifests for real and
// then acts as the CA's and the agent's service accounts (impersonation):
// every request their controllers make is allowed, and the requests next
// to them are forbidden. This checks the least-privilege rules where it
// matters, in the API server's authorizer, including the resourceNames
// grants that list and watch only through a metadata.name field selector.
func TestRBACAgainstAPIServer(t *testing.T) {
	k := kube.StartKube(t, kube.Options{Name: "rbac"})
	k.Namespace(t, namespace)
	k.Namespace(t, "istio-system")
	k.Namespace(t, "shop")
	a := newApplier(t, k)
	i := slices.IndexFunc(renderCases, func(c renderCase) bool { return c.name == "istio" })
	require.GreaterOrEqual(t, i, 0, "the istio render case")
	r := mustRender(t, renderCases[i].valuesOf(t))
	for _, o := range r.objects {
		require.NoError(t, a.apply(callCtx(t), o, false), "apply %s/%s", o.GetKind(), o.GetName())
	}
	ca := impersonate(t, k, namespace, "lanyard-ca")
	agent := impersonate(t, k, namespace, "lanyard-agent")
	byName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "istio-ca-root-cert").String()}
	onNode := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "node-a").String()}
	rootCM := func(ns string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio-ca-root-cert", Namespace: ns}, Data: map[string]string{"root-cert.pem": "x"}}
	}

	var calls []rbacCall
	for _, tt := range []rbacCall{
		// The CA: TokenReview.
		{"ca creates tokenreviews", func(ctx context.Context) error {
			_, err := ca.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: "x"}}, metav1.CreateOptions{})
			return err
		}, true},
		// The pod index.
		{"ca lists pods", func(ctx context.Context) error {
			_, err := ca.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{"ca watches pods", func(ctx context.Context) error {
			w, err := ca.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}, true},
		{"ca deletes pods", func(ctx context.Context) error {
			return ca.CoreV1().Pods("shop").Delete(ctx, "web", metav1.DeleteOptions{})
		}, false},
		// The root publisher: namespaces, and ConfigMaps of its name only.
		{"ca lists namespaces", func(ctx context.Context) error {
			_, err := ca.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{"ca lists root configmaps by name", func(ctx context.Context) error {
			_, err := ca.CoreV1().ConfigMaps("").List(ctx, byName)
			return err
		}, true},
		{"ca watches root configmaps by name", func(ctx context.Context) error {
			w, err := ca.CoreV1().ConfigMaps("").Watch(ctx, byName)
			if err == nil {
				w.Stop()
			}
			return err
		}, true},
		{"ca lists every configmap", func(ctx context.Context) error {
			_, err := ca.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"ca creates the root configmap", func(ctx context.Context) error {
			_, err := ca.CoreV1().ConfigMaps("shop").Create(ctx, rootCM("shop"), metav1.CreateOptions{})
			return err
		}, true},
		{"ca updates the root configmap", func(ctx context.Context) error {
			_, err := ca.CoreV1().ConfigMaps("shop").Update(ctx, rootCM("shop"), metav1.UpdateOptions{})
			return err
		}, true},
		{"ca updates another configmap", func(ctx context.Context) error {
			cm := rootCM(namespace)
			cm.Name = "lanyard-ca-config"
			_, err := ca.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{})
			return err
		}, false},
		{"ca reads another configmap", func(ctx context.Context) error {
			_, err := ca.CoreV1().ConfigMaps(namespace).Get(ctx, "lanyard-ca-config", metav1.GetOptions{})
			return err
		}, false},
		// istiod's certificate: one Secret in istio-system.
		{"ca creates istiod-tls", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets("istio-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "istiod-tls"}}, metav1.CreateOptions{})
			return err
		}, true},
		{"ca gets istiod-tls", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets("istio-system").Get(ctx, "istiod-tls", metav1.GetOptions{})
			return err
		}, true},
		{"ca updates istiod-tls", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets("istio-system").Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "istiod-tls", Namespace: "istio-system"}}, metav1.UpdateOptions{})
			return err
		}, true},
		{"ca gets another secret in istio-system", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets("istio-system").Get(ctx, "cacerts", metav1.GetOptions{})
			return err
		}, false},
		{"ca lists secrets in istio-system", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets("istio-system").List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"ca gets a secret elsewhere", func(ctx context.Context) error {
			_, err := ca.CoreV1().Secrets(namespace).Get(ctx, "istiod-tls", metav1.GetOptions{})
			return err
		}, false},
		// The agent: its node's pods, nothing else.
		{"agent lists its node's pods", func(ctx context.Context) error {
			_, err := agent.CoreV1().Pods("").List(ctx, onNode)
			return err
		}, true},
		{"agent watches its node's pods", func(ctx context.Context) error {
			w, err := agent.CoreV1().Pods("").Watch(ctx, onNode)
			if err == nil {
				w.Stop()
			}
			return err
		}, true},
		{"agent gets a pod", func(ctx context.Context) error {
			_, err := agent.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
			return err
		}, false},
		{"agent creates tokenreviews", func(ctx context.Context) error {
			_, err := agent.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: "x"}}, metav1.CreateOptions{})
			return err
		}, false},
		{"agent lists configmaps", func(ctx context.Context) error {
			_, err := agent.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"agent gets secrets", func(ctx context.Context) error {
			_, err := agent.CoreV1().Secrets("istio-system").Get(ctx, "istiod-tls", metav1.GetOptions{})
			return err
		}, false},
	} {
		calls = append(calls, tt)
	}
	// The allowed calls first: RBAC reaches the authorizer through
	// informers, so a grant just applied may take a moment, and a refusal
	// means something only once every grant is in.
	for _, tt := range calls {
		if !tt.allowed {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			var err error
			require.Eventually(t, func() bool {
				err = tt.call(callCtx(t))
				return !apierrors.IsForbidden(err)
			}, kube.CallTimeout, 50*time.Millisecond, "still forbidden")
			if apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
				err = nil // authorized; the object is simply (not) there
			}
			require.NoError(t, err)
		})
	}
	for _, tt := range calls {
		if tt.allowed {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(callCtx(t))
			require.True(t, apierrors.IsForbidden(err), "want Forbidden, got %v", err)
		})
	}
}

// rbacCall is one request made as a service account.
type rbacCall struct {
	name    string
	call    func(ctx context.Context) error
	allowed bool
}

// impersonate is a clientset acting as service account ns/name.
func impersonate(t *testing.T, k *kube.Kube, ns, name string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(k.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	hc, err := rest.HTTPClientFor(cfg)
	require.NoError(t, err)
	t.Cleanup(hc.CloseIdleConnections)
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	require.NoError(t, err)
	return cs
}
