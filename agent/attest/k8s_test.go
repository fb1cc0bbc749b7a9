package attest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/attest"
)

const (
	testNode = "node-a"
	podUID   = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	cid      = "4b825dc642cb6eb9a060e54bf8d69288fbee4904aaa6b3f4c3e8a1d2b7c6e5f4"
	cidOther = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391e69de29bb2d1d6434b8b29ae"
)

// procfs is a fake /proc for one or more processes.
type procfs string

func (p procfs) add(t *testing.T, pid int32, startTime uint64, cgroup string) {
	t.Helper()
	dir := filepath.Join(string(p), strconv.Itoa(int(pid)))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stat := fmt.Sprintf("%d (app) S 1 %d %d 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %d 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, pid, pid, startTime)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644))
}

func podCgroup(uid, containerID string) string {
	u := []byte(uid)
	for i, c := range u {
		if c == '-' {
			u[i] = '_'
		}
	}
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + string(u) + ".slice/cri-containerd-" + containerID + ".scope\n"
}

func testPod(name, node string, uid types.UID, phase corev1.PodPhase, containerIDs ...string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: uid},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "checkout"},
		Status:     corev1.PodStatus{Phase: phase},
	}
	for i, id := range containerIDs {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: fmt.Sprintf("c%d", i), ContainerID: "containerd://" + id,
		})
	}
	return pod
}

// startK8s runs a K8s attestor on a fake clientset holding pods.
func startK8s(t *testing.T, proc procfs, wait time.Duration, pods ...*corev1.Pod) (*attest.K8s, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	for _, p := range pods {
		require.NoError(t, client.Tracker().Add(p))
	}
	k, err := attest.NewK8s(attest.K8sConfig{Client: client, NodeName: testNode, ProcRoot: string(proc), Wait: wait})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, k.Synced, 10*time.Second, 10*time.Millisecond)
	return k, client
}

func TestK8sAttest(t *testing.T) {
	const pid, start = 4242, 987654
	for _, tt := range []struct {
		name    string
		pods    []*corev1.Pod
		cgroup  string
		peer    attest.Peer
		want    *agent.Attested
		wantErr string // "" with want nil: not a pod, next attestor
	}{
		{
			name:   "container of a running pod on this node",
			pods:   []*corev1.Pod{testPod("checkout-7d9f", testNode, podUID, corev1.PodRunning, cidOther, cid)},
			cgroup: podCgroup(podUID, cid),
			peer:   attest.Peer{PID: pid, UID: 1000, StartTime: start},
			want: &agent.Attested{Attestor: "k8s", Namespace: "shop", ServiceAccount: "checkout",
				PodName: "checkout-7d9f", PodUID: podUID},
		},
		{
			name:    "pod on another node",
			pods:    []*corev1.Pod{testPod("checkout-7d9f", "node-b", podUID, corev1.PodRunning, cid)},
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid, StartTime: start},
			wantErr: "no running pod",
		},
		{
			name:    "container not in the pod's status",
			pods:    []*corev1.Pod{testPod("checkout-7d9f", testNode, podUID, corev1.PodRunning, cidOther)},
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid, StartTime: start},
			wantErr: "no running pod",
		},
		{
			name:    "finished pod",
			pods:    []*corev1.Pod{testPod("checkout-7d9f", testNode, podUID, corev1.PodSucceeded, cid)},
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid, StartTime: start},
			wantErr: "no running pod",
		},
		{
			name:    "unknown pod",
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid, StartTime: start},
			wantErr: "no running pod",
		},
		{
			name:   "host process is left to the next attestor",
			cgroup: "0::/system.slice/sshd.service\n",
			peer:   attest.Peer{PID: pid, StartTime: start},
		},
		{
			name: "pid not visible is left to the next attestor",
			peer: attest.Peer{PID: 0, UID: 1000},
		},
		{
			name:    "pid reused by another process",
			pods:    []*corev1.Pod{testPod("checkout-7d9f", testNode, podUID, corev1.PodRunning, cid)},
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid, StartTime: start - 1},
			wantErr: "now belongs to another process",
		},
		{
			name:    "start time unknown",
			cgroup:  podCgroup(podUID, cid),
			peer:    attest.Peer{PID: pid},
			wantErr: "start time of pid 4242 unknown",
		},
		{
			name:    "process exited",
			peer:    attest.Peer{PID: pid + 1, StartTime: start},
			wantErr: "process exited",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proc := procfs(t.TempDir())
			proc.add(t, pid, start, tt.cgroup)
			k, _ := startK8s(t, proc, 50*time.Millisecond, tt.pods...)
			got, err := k.Attest(context.Background(), tt.peer)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, agent.ErrNotIdentified)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestK8sWatchesOnlyThisNode(t *testing.T) {
	_, client := startK8s(t, procfs(t.TempDir()), time.Second)
	var selectors []string
	for _, a := range client.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "pods" {
			selectors = append(selectors, l.GetListRestrictions().Fields.String())
		}
	}
	require.NotEmpty(t, selectors)
	for _, s := range selectors {
		require.Equal(t, "spec.nodeName="+testNode, s)
	}
}

func TestK8sWaitsForContainerToBeReported(t *testing.T) {
	const pid, start = 99, 5555
	proc := procfs(t.TempDir())
	proc.add(t, pid, start, podCgroup(podUID, cid))
	// The pod is known, but the kubelet has not reported the container yet.
	pending := testPod("checkout-7d9f", testNode, podUID, corev1.PodPending)
	k, client := startK8s(t, proc, 30*time.Second, pending)

	type result struct {
		a   *agent.Attested
		err error
	}
	res := make(chan result, 1)
	go func() {
		a, err := k.Attest(context.Background(), attest.Peer{PID: pid, StartTime: start})
		res <- result{a, err}
	}()
	running := testPod("checkout-7d9f", testNode, podUID, corev1.PodRunning, cid)
	_, err := client.CoreV1().Pods("shop").UpdateStatus(context.Background(), running, metav1.UpdateOptions{})
	require.NoError(t, err)
	r := <-res
	require.NoError(t, r.err)
	require.Equal(t, "checkout", r.a.ServiceAccount)
}

func TestK8sNotSyncedIsNotADenial(t *testing.T) {
	const pid, start = 99, 5555
	proc := procfs(t.TempDir())
	proc.add(t, pid, start, podCgroup(podUID, cid))
	k, err := attest.NewK8s(attest.K8sConfig{Client: fake.NewClientset(), NodeName: testNode, ProcRoot: string(proc), Wait: 50 * time.Millisecond})
	require.NoError(t, err)
	// Run is not started: the informer never syncs.
	_, err = k.Attest(context.Background(), attest.Peer{PID: pid, StartTime: start})
	require.ErrorContains(t, err, "not synced")
	require.NotErrorIs(t, err, agent.ErrNotIdentified)
}

func TestNewK8sValidates(t *testing.T) {
	_, err := attest.NewK8s(attest.K8sConfig{NodeName: testNode})
	require.Error(t, err)
	_, err = attest.NewK8s(attest.K8sConfig{Client: fake.NewClientset()})
	require.Error(t, err)
}
