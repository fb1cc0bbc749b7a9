package kube_test

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lanyard-id/lanyard/ca/kube"
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
