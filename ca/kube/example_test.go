package kube_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
)

// A PodIndex answers the Istio API's question "may ztunnel on node-a ask
// for default/app's certificate?" from one informer over the cluster's
// pods.
func ExamplePodIndex() {
	client := fake.NewClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app-7d9f"},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "app"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	idx, err := kube.NewPodIndex(kube.PodIndexConfig{Cluster: "prod", Client: client})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = idx.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !idx.Synced() {
		time.Sleep(time.Millisecond)
	}

	onA, _ := idx.PodsOnNode(ctx, "prod", "node-a", "default", "app")
	onB, _ := idx.PodsOnNode(ctx, "prod", "node-b", "default", "app")
	fmt.Println(onA, onB)
	// Output: true false
}

// staticToken is a stand-in for a real verifier (a tokens.Cache over a
// tokens.JWKSVerifier): every token is bound to pod default/app-7d9f.
type staticToken struct{}

func (staticToken) Verify(context.Context, string, string) (*tokens.ServiceAccount, error) {
	return &tokens.ServiceAccount{
		Cluster: "prod", Namespace: "default", Name: "app", UID: "sa-uid",
		PodName: "app-7d9f", PodUID: "pod-uid", NodeName: "node-a", Expiry: time.Now().Add(time.Hour),
	}, nil
}

// A BoundPodVerifier refuses a pod-bound token once its pod is gone, which
// offline JWKS verification alone cannot know.
func ExampleBoundPodVerifier() {
	client := fake.NewClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app-7d9f", UID: "pod-uid"},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "app"},
	})
	idx, err := kube.NewPodIndex(kube.PodIndexConfig{Cluster: "prod", Client: client})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = idx.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !idx.Synced() {
		time.Sleep(time.Millisecond)
	}
	v, err := kube.NewBoundPodVerifier(kube.BoundPodConfig{Cluster: "prod", Next: staticToken{}, Pods: idx, Wait: -1})
	if err != nil {
		panic(err)
	}

	sa, err := v.Verify(ctx, "token", "lanyard")
	fmt.Println(sa.PodName, err)
	_ = client.CoreV1().Pods("default").Delete(ctx, "app-7d9f", metav1.DeleteOptions{})
	for {
		if _, err := v.Verify(ctx, "token", "lanyard"); errors.Is(err, tokens.ErrInvalidToken) {
			fmt.Println(err)
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Output:
	// app-7d9f <nil>
	// invalid token: bound pod default/app-7d9f is gone (deleted, finished or on no node)
}
