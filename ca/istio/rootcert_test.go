package istio

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/lanyard-id/lanyard/ca"
)

func namespace(name string, phase corev1.NamespacePhase) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: phase}}
}

// rootCert returns the root-cert.pem of ConfigMap istio-ca-root-cert in
// ns, or "" when there is none.
func rootCert(t *testing.T, client kubernetes.Interface, ns string) string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), IstioRootCertConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	require.NoError(t, err)
	return cm.Data[IstioRootCertKey]
}

func eventuallyRootCert(t *testing.T, client kubernetes.Interface, ns, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return rootCert(t, client, ns) == want }, 10*time.Second, 5*time.Millisecond,
		"namespace %s", ns)
}

func runPublisher(t *testing.T, p *RootCertPublisher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func TestRootCertPublisher(t *testing.T) {
	root1, root2 := selfSigned(t, "root 1"), selfSigned(t, "root 2")
	bundler := newFakeBundler(root1)
	pem1 := string(certsPEM(bundler.Bundle().Roots))
	// istio-system already has the ConfigMap istiod left, with another key.
	client := fake.NewClientset(
		namespace("default", corev1.NamespaceActive),
		namespace("istio-system", corev1.NamespaceActive),
		namespace("going", corev1.NamespaceTerminating),
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: IstioRootCertConfigMap},
			Data:       map[string]string{IstioRootCertKey: "old root", "other": "kept"},
		},
	)
	p, err := NewRootCertPublisher(RootCertConfig{Client: client, Bundler: bundler})
	require.NoError(t, err)
	runPublisher(t, p)
	ctx := context.Background()

	eventuallyRootCert(t, client, "default", pem1)
	eventuallyRootCert(t, client, "istio-system", pem1)
	cm, err := client.CoreV1().ConfigMaps("istio-system").Get(ctx, IstioRootCertConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "kept", cm.Data["other"], "other keys are left alone")
	require.Equal(t, managedBy, cm.Labels[labelManagedBy])
	cm, err = client.CoreV1().ConfigMaps("default").Get(ctx, IstioRootCertConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "true", cm.Labels[labelIstioConfig])
	require.Empty(t, rootCert(t, client, "going"), "terminating namespaces are skipped")

	t.Run("new namespace", func(t *testing.T) {
		_, err := client.CoreV1().Namespaces().Create(ctx, namespace("team-a", corev1.NamespaceActive), metav1.CreateOptions{})
		require.NoError(t, err)
		eventuallyRootCert(t, client, "team-a", pem1)
	})
	t.Run("edited ConfigMap is restored", func(t *testing.T) {
		cm, err := client.CoreV1().ConfigMaps("default").Get(ctx, IstioRootCertConfigMap, metav1.GetOptions{})
		require.NoError(t, err)
		cm.Data[IstioRootCertKey] = "tampered"
		_, err = client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
		require.NoError(t, err)
		eventuallyRootCert(t, client, "default", pem1)
	})
	t.Run("deleted ConfigMap is recreated", func(t *testing.T) {
		require.NoError(t, client.CoreV1().ConfigMaps("team-a").Delete(ctx, IstioRootCertConfigMap, metav1.DeleteOptions{}))
		eventuallyRootCert(t, client, "team-a", pem1)
	})
	t.Run("bundle change reaches every namespace", func(t *testing.T) {
		bundler.set(root1, root2)
		both := string(certsPEM([]*x509.Certificate{root1, root2}))
		for _, ns := range []string{"default", "istio-system", "team-a"} {
			eventuallyRootCert(t, client, ns, both)
		}
	})
}

func TestRootCertPublisherCustomName(t *testing.T) {
	root := selfSigned(t, "root")
	client := fake.NewClientset(namespace("default", corev1.NamespaceActive))
	p, err := NewRootCertPublisher(RootCertConfig{Client: client, Bundler: newFakeBundler(root), Name: "mesh-root", Key: "ca.pem"})
	require.NoError(t, err)
	runPublisher(t, p)
	require.Eventually(t, func() bool {
		cm, err := client.CoreV1().ConfigMaps("default").Get(context.Background(), "mesh-root", metav1.GetOptions{})
		return err == nil && cm.Data["ca.pem"] == string(certsPEM([]*x509.Certificate{root}))
	}, 10*time.Second, 5*time.Millisecond)
}

func TestRootCertPublisherEmptyBundle(t *testing.T) {
	client := fake.NewClientset(namespace("default", corev1.NamespaceActive))
	p, err := NewRootCertPublisher(RootCertConfig{Client: client, Bundler: newFakeBundler()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, f := range p.factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	require.True(t, cache.WaitForCacheSync(ctx.Done(), p.nsInf.HasSynced, p.cmInf.HasSynced))
	require.ErrorIs(t, p.sync(ctx, "default"), ca.ErrNotReady, "no roots: nothing is published")
	require.Empty(t, rootCert(t, client, "default"))
	cancel()
}

func TestNewRootCertPublisherValidates(t *testing.T) {
	_, err := NewRootCertPublisher(RootCertConfig{Bundler: newFakeBundler()})
	require.Error(t, err)
	_, err = NewRootCertPublisher(RootCertConfig{Client: fake.NewClientset()})
	require.Error(t, err)
}
