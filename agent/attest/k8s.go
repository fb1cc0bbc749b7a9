package attest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/lanyard-id/lanyard/agent"
)

// K8sAttestorName is the Attestor value of workloads the K8s attestor
// identified.
const K8sAttestorName = "k8s"

// podUIDIndex indexes the node's pods by UID.
const podUIDIndex = "uid"

// K8sConfig configures a K8s attestor.
type K8sConfig struct {
	// Client talks to the cluster's API server. Required.
	Client kubernetes.Interface
	// NodeName is the node the agent runs on. Required: only pods
	// scheduled here are ever attested.
	NodeName string
	// ProcRoot is where the host's procfs is mounted (default /proc). The
	// agent must see the workloads' PIDs: hostPID in a DaemonSet.
	ProcRoot string
	// Wait bounds how long Attest waits for the pod, or the caller's
	// container in its status, to show up in the informer (a container can
	// call before the kubelet has reported it). Default 10s.
	Wait time.Duration
	// Resync is the informer's resync period (default 10m).
	Resync time.Duration
	// Logger receives sync events and attestation details. Default: discard.
	Logger *slog.Logger
}

// K8s identifies a socket peer as a container of a pod on this node: PID
// → /proc/<pid>/cgroup → pod UID and container ID → the pod, from an
// informer on the node's pods (field selector spec.nodeName) indexed by
// UID → its namespace and service account. No request is made to the API
// server per call.
//
// Run must be running for Attest to answer; until the informer's first
// list is done Attest waits (up to Wait) and then fails with an error that
// does not wrap agent.ErrNotIdentified (Kubernetes unavailable).
type K8s struct {
	cfg      K8sConfig
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every pod add or update
}

// NewK8s validates cfg and sets up (but does not start) the informer.
func NewK8s(cfg K8sConfig) (*K8s, error) {
	if cfg.Client == nil || cfg.NodeName == "" {
		return nil, errors.New("k8s attestor: client and node name are required")
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = DefaultProcRoot
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 10 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	onNode := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = onNode }),
		informers.WithTransform(stripPod))
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{podUIDIndex: indexPodByUID}); err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	k := &K8s{cfg: cfg, factory: factory, informer: inf, changed: make(chan struct{})}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.notify() },
		UpdateFunc: func(any, any) { k.notify() },
	}); err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	return k, nil
}

// Run starts the informer, logs when it has synced, and stops it when ctx
// ends.
func (k *K8s) Run(ctx context.Context) error {
	k.factory.Start(ctx.Done())
	defer k.factory.Shutdown()
	start := time.Now()
	if k.waitSynced(ctx) {
		k.cfg.Logger.Info("k8s attestor synced", "node", k.cfg.NodeName,
			"pods", len(k.informer.GetStore().ListKeys()), "took", time.Since(start).Round(time.Millisecond))
	}
	<-ctx.Done()
	return nil
}

// Synced reports whether the informer's first list is done.
func (k *K8s) Synced() bool { return k.informer.HasSynced() }

// Attest returns the service account of the pod whose container p runs
// in; nil when p is not in a pod container (or not visible in this PID
// namespace), so that the next attestor may try.
func (k *K8s) Attest(ctx context.Context, p Peer) (*agent.Attested, error) {
	if p.PID <= 0 {
		k.cfg.Logger.Debug("k8s attestor: peer pid not visible", "uid", p.UID)
		return nil, nil
	}
	pc, ok, err := k.podContainer(p)
	if err != nil || !ok {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Wait)
	defer cancel()
	if !k.waitSynced(ctx) {
		return nil, fmt.Errorf("k8s attestor: pods of node %q not synced yet", k.cfg.NodeName)
	}
	for {
		changed := k.changes()
		pod, err := k.lookup(pc)
		if err != nil {
			return nil, err
		}
		if pod != nil {
			return &agent.Attested{
				Attestor:       K8sAttestorName,
				Namespace:      pod.Namespace,
				ServiceAccount: pod.Spec.ServiceAccountName,
				PodName:        pod.Name,
				PodUID:         string(pod.UID),
			}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no running pod %s with container %s on node %q",
				agent.ErrNotIdentified, pc.PodUID, pc.ContainerID, k.cfg.NodeName)
		}
	}
}

// podContainer reads the peer's cgroups, making sure the PID still
// belongs to the process that connected: its start time must be the one
// read when the connection was accepted, before and after the read.
func (k *K8s) podContainer(p Peer) (podContainer, bool, error) {
	if p.StartTime == 0 {
		return podContainer{}, false, fmt.Errorf("%w: start time of pid %d unknown", agent.ErrNotIdentified, p.PID)
	}
	same := func() error {
		st, err := processStartTime(k.cfg.ProcRoot, p.PID)
		if err != nil {
			return fmt.Errorf("%w: pid %d: %w", agent.ErrNotIdentified, p.PID, procErr(err))
		}
		if st != p.StartTime {
			return fmt.Errorf("%w: pid %d now belongs to another process", agent.ErrNotIdentified, p.PID)
		}
		return nil
	}
	if err := same(); err != nil {
		return podContainer{}, false, err
	}
	data, err := readBounded(filepath.Join(k.cfg.ProcRoot, strconv.Itoa(int(p.PID)), "cgroup"), maxCgroupFileSize)
	if err != nil {
		return podContainer{}, false, fmt.Errorf("%w: pid %d: %w", agent.ErrNotIdentified, p.PID, procErr(err))
	}
	if err := same(); err != nil {
		return podContainer{}, false, err
	}
	pc, ok, err := parseCgroupFile(data)
	if err != nil {
		return podContainer{}, false, fmt.Errorf("%w: pid %d: %w", agent.ErrNotIdentified, p.PID, err)
	}
	return pc, ok, nil
}

// procErr says "process gone" for the usual error of a PID that exited.
func procErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("process exited")
	}
	return err
}

// lookup finds the running pod on this node with pc's UID whose status
// lists pc's container; nil when there is none (yet).
func (k *K8s) lookup(pc podContainer) (*corev1.Pod, error) {
	objs, err := k.informer.GetIndexer().ByIndex(podUIDIndex, pc.PodUID)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	for _, obj := range objs {
		pod, ok := obj.(*corev1.Pod)
		// The field selector already limits the informer to this node;
		// checking again costs nothing.
		if !ok || pod.Spec.NodeName != k.cfg.NodeName {
			continue
		}
		switch pod.Status.Phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			continue
		}
		if pod.Spec.ServiceAccountName == "" || !hasContainer(pod, pc.ContainerID) {
			continue
		}
		return pod, nil
	}
	return nil, nil
}

// hasContainer reports whether any (init, ephemeral) container status of
// pod has the runtime ID id ("<runtime>://<id>").
func hasContainer(pod *corev1.Pod, id string) bool {
	for _, list := range [][]corev1.ContainerStatus{
		pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses,
	} {
		for _, cs := range list {
			_, cid, found := strings.Cut(cs.ContainerID, "://")
			if found && cid == id {
				return true
			}
		}
	}
	return false
}

func (k *K8s) waitSynced(ctx context.Context) bool {
	if k.informer.HasSynced() {
		return true
	}
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		return k.informer.HasSynced(), nil
	})
	return err == nil
}

// changes returns a channel closed at the next pod add or update.
func (k *K8s) changes() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

func (k *K8s) notify() {
	k.mu.Lock()
	defer k.mu.Unlock()
	close(k.changed)
	k.changed = make(chan struct{})
}

func indexPodByUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.UID == "" {
		return nil, nil
	}
	return []string{string(pod.UID)}, nil
}

// stripPod keeps only what attestation needs, so that memory stays small.
func stripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone (cache.DeletedFinalStateUnknown)
	}
	ids := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		if len(in) == 0 {
			return nil
		}
		out := make([]corev1.ContainerStatus, len(in))
		for i, cs := range in {
			out[i] = corev1.ContainerStatus{Name: cs.Name, ContainerID: cs.ContainerID}
		}
		return out
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{
			Phase:                      pod.Status.Phase,
			ContainerStatuses:          ids(pod.Status.ContainerStatuses),
			InitContainerStatuses:      ids(pod.Status.InitContainerStatuses),
			EphemeralContainerStatuses: ids(pod.Status.EphemeralContainerStatuses),
		},
	}, nil
}
