package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/lanyard-id/lanyard/ca"
)

// nodeServiceAccountIndex indexes pods by "<node>/<namespace>/<service account>".
const (
	nodeServiceAccountIndex = "node-serviceaccount"
	podUIDIndex             = "uid"
)

// Pod is what the CA needs to know of a pod.
type Pod struct {
	Namespace      string
	Name           string
	UID            string
	ServiceAccount string
	NodeName       string
}

// PodIndexConfig configures a PodIndex.
type PodIndexConfig struct {
	// Cluster is the name the CA gives this cluster (its clusters: entry).
	// Required: a question about another cluster is refused.
	Cluster string
	// Client talks to the cluster's API server. Required.
	Client kubernetes.Interface
	// Resync is the informer's resync period (default 10m).
	Resync time.Duration
	// Logger receives sync events. Default: discard.
	Logger *slog.Logger
}

// PodIndex knows which service accounts have pods on which node, from an
// informer on every pod of one cluster. Pods are stripped to the few
// fields the index needs before they are stored, so that memory stays
// small in big clusters. Pods that have finished (Succeeded, Failed) or
// are not scheduled yet do not count.
//
// It implements server.PodLocator. Run must be running for it to answer;
// until its first list is done every question gets ErrUnavailable.
type PodIndex struct {
	cfg      PodIndexConfig
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer

	mu      sync.Mutex
	changed chan struct{} // closed on the next add or update; nil until asked for
}

// NewPodIndex validates cfg and sets up (but does not start) the informer.
func NewPodIndex(cfg PodIndexConfig) (*PodIndex, error) {
	if cfg.Cluster == "" || cfg.Client == nil {
		return nil, errors.New("pod index: cluster and client are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync, informers.WithTransform(stripPod))
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{
		nodeServiceAccountIndex: indexPodByNodeServiceAccount,
		podUIDIndex:             indexPodByUID,
	}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	p := &PodIndex{cfg: cfg, factory: factory, informer: inf}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.notify() },
		UpdateFunc: func(any, any) { p.notify() },
	}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	return p, nil
}

// Changed returns a channel that is closed when the index next learns of a
// new or changed pod, so that a caller that did not find a pod can wait for
// the watch to catch up instead of polling. Take the channel before the
// lookup, so that no event falls in between.
func (p *PodIndex) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// notify wakes the callers of Changed; it costs nothing when nobody waits.
func (p *PodIndex) notify() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// Run starts the informer, logs when it has synced, and stops it when ctx
// ends.
func (p *PodIndex) Run(ctx context.Context) error {
	p.factory.Start(ctx.Done())
	defer p.factory.Shutdown()
	start := time.Now()
	if cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		p.cfg.Logger.Info("pod index synced", "cluster", p.cfg.Cluster,
			"pods", len(p.informer.GetStore().ListKeys()), "took", time.Since(start).Round(time.Millisecond))
	}
	<-ctx.Done()
	return nil
}

// Synced reports whether the first list of pods is done.
func (p *PodIndex) Synced() bool { return p.informer.HasSynced() }

// PodsOnNode reports whether a running or pending pod of service account
// namespace/serviceAccount is scheduled on node in cluster. Before the
// first sync it returns ErrUnavailable; for another cluster it returns
// ca.ErrPermissionDenied, since nothing can be known there.
func (p *PodIndex) PodsOnNode(_ context.Context, cluster, node, namespace, serviceAccount string) (bool, error) {
	if cluster != p.cfg.Cluster {
		return false, fmt.Errorf("%w: no pod index for cluster %.64q", ca.ErrPermissionDenied, cluster)
	}
	if !p.informer.HasSynced() {
		return false, fmt.Errorf("%w: pod index of cluster %q not synced yet", ErrUnavailable, cluster)
	}
	if node == "" || namespace == "" || serviceAccount == "" {
		return false, nil
	}
	keys, err := p.informer.GetIndexer().IndexKeys(nodeServiceAccountIndex, nodeServiceAccountKey(node, namespace, serviceAccount))
	if err != nil {
		return false, fmt.Errorf("pod index: %w", err)
	}
	return len(keys) > 0, nil
}

// PodByUID returns the running or pending pod with this UID in cluster;
// found is false when there is none (deleted, finished, never existed).
// Before the first sync it returns ErrUnavailable.
func (p *PodIndex) PodByUID(_ context.Context, cluster, uid string) (pod Pod, found bool, err error) {
	if cluster != p.cfg.Cluster {
		return Pod{}, false, fmt.Errorf("%w: no pod index for cluster %.64q", ca.ErrPermissionDenied, cluster)
	}
	if !p.informer.HasSynced() {
		return Pod{}, false, fmt.Errorf("%w: pod index of cluster %q not synced yet", ErrUnavailable, cluster)
	}
	if uid == "" {
		return Pod{}, false, nil
	}
	objs, err := p.informer.GetIndexer().ByIndex(podUIDIndex, uid)
	if err != nil {
		return Pod{}, false, fmt.Errorf("pod index: %w", err)
	}
	for _, o := range objs {
		kp, ok := o.(*corev1.Pod)
		if !ok || kp.Spec.NodeName == "" || kp.Status.Phase == corev1.PodSucceeded || kp.Status.Phase == corev1.PodFailed {
			continue
		}
		return Pod{Namespace: kp.Namespace, Name: kp.Name, UID: string(kp.UID), ServiceAccount: kp.Spec.ServiceAccountName, NodeName: kp.Spec.NodeName}, true, nil
	}
	return Pod{}, false, nil
}

func indexPodByUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.UID == "" {
		return nil, nil
	}
	return []string{string(pod.UID)}, nil
}

func nodeServiceAccountKey(node, namespace, serviceAccount string) string {
	return node + "/" + namespace + "/" + serviceAccount
}

func indexPodByNodeServiceAccount(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" || pod.Spec.ServiceAccountName == "" {
		return nil, nil
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return nil, nil
	}
	return []string{nodeServiceAccountKey(pod.Spec.NodeName, pod.Namespace, pod.Spec.ServiceAccountName)}, nil
}

// stripPod keeps only what the index and the informer need.
func stripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone (cache.DeletedFinalStateUnknown)
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
		},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}

// PodIndexes finds pods across clusters, one PodIndex per cluster name.
type PodIndexes map[string]*PodIndex

// PodByUID asks the index of cluster; a cluster without one is refused.
func (m PodIndexes) PodByUID(ctx context.Context, cluster, uid string) (Pod, bool, error) {
	p, ok := m[cluster]
	if !ok {
		return Pod{}, false, fmt.Errorf("%w: the CA has no pod index for cluster %.64q", ca.ErrPermissionDenied, cluster)
	}
	return p.PodByUID(ctx, cluster, uid)
}
