package kube

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lanyard-id/lanyard/ca"
)

func pod(ns, name, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name),
			Labels: map[string]string{"app": name}, Annotations: map[string]string{"big": "annotation"}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "c", Image: "example/app:1"}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// runPodIndex starts idx and stops it when the test ends.
func runPodIndex(t *testing.T, idx *PodIndex) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- idx.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, idx.Synced, 10*time.Second, 5*time.Millisecond)
}

func TestPodIndex(t *testing.T) {
	client := fake.NewClientset(
		pod("istio-system", "ztunnel-a", "ztunnel", "node-a", corev1.PodRunning),
		pod("default", "app-1", "app", "node-a", corev1.PodRunning),
		pod("default", "far-1", "far", "node-b", corev1.PodRunning),
		pod("default", "done-1", "done", "node-a", corev1.PodSucceeded),
		pod("default", "failed-1", "failed", "node-a", corev1.PodFailed),
		pod("default", "pending-1", "pending", "node-a", corev1.PodPending),
		pod("default", "unscheduled-1", "unscheduled", "", corev1.PodPending),
	)
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: client})
	require.NoError(t, err)
	runPodIndex(t, idx)
	ctx := context.Background()
	for _, tt := range []struct {
		name, node, ns, sa string
		want               bool
	}{
		{"running pod on the node", "node-a", "default", "app", true},
		{"node proxy itself", "node-a", "istio-system", "ztunnel", true},
		{"pending pod on the node", "node-a", "default", "pending", true},
		{"pod on another node", "node-a", "default", "far", false},
		{"same name, other namespace", "node-a", "other", "app", false},
		{"succeeded pod does not count", "node-a", "default", "done", false},
		{"failed pod does not count", "node-a", "default", "failed", false},
		{"unscheduled pod is on no node", "", "default", "unscheduled", false},
		{"no such service account", "node-a", "default", "ghost", false},
		{"no such node", "node-z", "default", "app", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := idx.PodsOnNode(ctx, "prod", tt.node, tt.ns, tt.sa)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	t.Run("another cluster is refused", func(t *testing.T) {
		_, err := idx.PodsOnNode(ctx, "other", "node-a", "default", "app")
		require.ErrorIs(t, err, ca.ErrPermissionDenied)
	})

	t.Run("follows pods as they come and go", func(t *testing.T) {
		pods := client.CoreV1().Pods("default")
		_, err := pods.Create(ctx, pod("default", "new-1", "new", "node-c", corev1.PodPending), metav1.CreateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			ok, err := idx.PodsOnNode(ctx, "prod", "node-c", "default", "new")
			return err == nil && ok
		}, 10*time.Second, 5*time.Millisecond)
		p := pod("default", "new-1", "new", "node-c", corev1.PodSucceeded)
		_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			ok, err := idx.PodsOnNode(ctx, "prod", "node-c", "default", "new")
			return err == nil && !ok
		}, 10*time.Second, 5*time.Millisecond)
		require.NoError(t, pods.Delete(ctx, "app-1", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			ok, err := idx.PodsOnNode(ctx, "prod", "node-a", "default", "app")
			return err == nil && !ok
		}, 10*time.Second, 5*time.Millisecond)
	})

	t.Run("stores stripped pods", func(t *testing.T) {
		for _, obj := range idx.informer.GetStore().List() {
			p := obj.(*corev1.Pod)
			require.Empty(t, p.Spec.Containers)
			require.Empty(t, p.Labels)
			require.Empty(t, p.Annotations)
			require.NotEmpty(t, p.Spec.ServiceAccountName)
		}
	})
}

func TestPodIndexNotSynced(t *testing.T) {
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: fake.NewClientset()})
	require.NoError(t, err)
	_, err = idx.PodsOnNode(context.Background(), "prod", "node-a", "default", "app")
	require.ErrorIs(t, err, ErrUnavailable)
}

func TestNewPodIndexValidates(t *testing.T) {
	_, err := NewPodIndex(PodIndexConfig{Client: fake.NewClientset()})
	require.Error(t, err)
	_, err = NewPodIndex(PodIndexConfig{Cluster: "prod"})
	require.Error(t, err)
}

func TestPodIndexPodByUID(t *testing.T) {
	client := fake.NewClientset(
		pod("default", "app-1", "app", "node-a", corev1.PodRunning),
		pod("default", "done-1", "done", "node-a", corev1.PodSucceeded),
		pod("default", "unscheduled-1", "unscheduled", "", corev1.PodPending),
	)
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: client})
	require.NoError(t, err)
	runPodIndex(t, idx)
	ctx := context.Background()
	got, found, err := idx.PodByUID(ctx, "prod", "default-app-1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, Pod{Namespace: "default", Name: "app-1", UID: "default-app-1", ServiceAccount: "app", NodeName: "node-a"}, got)
	for _, uid := range []string{"default-done-1", "default-unscheduled-1", "nope", ""} {
		_, found, err := idx.PodByUID(ctx, "prod", uid)
		require.NoError(t, err)
		require.False(t, found, uid)
	}
	_, _, err = idx.PodByUID(ctx, "other", "default-app-1")
	require.ErrorIs(t, err, ca.ErrPermissionDenied)
	// A deleted pod is gone from the index.
	require.NoError(t, client.CoreV1().Pods("default").Delete(ctx, "app-1", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, found, _ := idx.PodByUID(ctx, "prod", "default-app-1")
		return !found
	}, 5*time.Second, 5*time.Millisecond)
	// PodIndexes dispatches by cluster and refuses unknown ones.
	m := PodIndexes{"prod": idx}
	_, _, err = m.PodByUID(ctx, "staging", "x")
	require.ErrorIs(t, err, ca.ErrPermissionDenied)
}
