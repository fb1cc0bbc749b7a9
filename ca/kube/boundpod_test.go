package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// staticVerifier answers each token with the service account it maps
// to, or err.
type staticVerifier struct {
	accounts map[string]*tokens.ServiceAccount
	err      error
}

func (s *staticVerifier) Verify(_ context.Context, token, _ string) (*tokens.ServiceAccount, error) {
	if s.err != nil {
		return nil, s.err
	}
	sa, ok := s.accounts[token]
	if !ok {
		return nil, tokens.ErrInvalidToken
	}
	out := *sa
	return &out, nil
}

// boundSA is what a verifier says of a token bound to pod ns/name (UID
// ns-name, the pod helper's) of service account sa on node.
func boundSA(ns, name, sa, node string) *tokens.ServiceAccount {
	return &tokens.ServiceAccount{
		Cluster: "prod", Namespace: ns, Name: sa, UID: "sa-uid",
		PodName: name, PodUID: ns + "-" + name, NodeName: node, Expiry: time.Now().Add(time.Hour),
	}
}

func TestBoundPodVerifier(t *testing.T) {
	client := fake.NewClientset(
		pod("default", "app-1", "app", "node-a", corev1.PodRunning),
		pod("default", "pending-1", "app", "node-a", corev1.PodPending),
		pod("default", "done-1", "app", "node-a", corev1.PodSucceeded),
	)
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: client})
	require.NoError(t, err)
	runPodIndex(t, idx)

	gone := boundSA("default", "gone-1", "app", "node-a")
	otherSA := boundSA("default", "app-1", "other", "node-a")
	otherNode := boundSA("default", "app-1", "app", "node-b")
	renamed := boundSA("default", "app-1", "app", "node-a")
	renamed.PodName = "app-2"
	noNodeClaim := boundSA("default", "app-1", "app", "")
	unbound := &tokens.ServiceAccount{Cluster: "prod", Namespace: "default", Name: "app", UID: "sa-uid"}
	next := &staticVerifier{accounts: map[string]*tokens.ServiceAccount{
		"running": boundSA("default", "app-1", "app", "node-a"), "pending": boundSA("default", "pending-1", "app", "node-a"),
		"done": boundSA("default", "done-1", "app", "node-a"), "gone": gone, "other-sa": otherSA,
		"other-node": otherNode, "renamed": renamed, "no-node-claim": noNodeClaim, "unbound": unbound,
	}}
	v, err := NewBoundPodVerifier(BoundPodConfig{Cluster: "prod", Next: next, Pods: idx, Wait: -1})
	require.NoError(t, err)

	for _, tt := range []struct {
		name, token string
		wantErr     error
	}{
		{"running pod", "running", nil},
		{"pending pod on a node", "pending", nil},
		{"token without node claim, pod exists", "no-node-claim", nil},
		{"token bound to no pod", "unbound", nil},
		{"deleted pod", "gone", tokens.ErrInvalidToken},
		{"finished pod", "done", tokens.ErrInvalidToken},
		{"pod runs as another service account", "other-sa", tokens.ErrInvalidToken},
		{"pod runs on another node", "other-node", tokens.ErrInvalidToken},
		{"pod UID reused under another name", "renamed", tokens.ErrInvalidToken},
		{"next refuses", "unknown", tokens.ErrInvalidToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sa, err := v.Verify(context.Background(), tt.token, "lanyard")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, sa)
				return
			}
			require.NoError(t, err)
			require.Equal(t, next.accounts[tt.token], sa)
		})
	}

	t.Run("a deleted pod's token is refused once the watch sees the deletion", func(t *testing.T) {
		ctx := context.Background()
		_, err := v.Verify(ctx, "pending", "lanyard")
		require.NoError(t, err)
		require.NoError(t, client.CoreV1().Pods("default").Delete(ctx, "pending-1", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := v.Verify(ctx, "pending", "lanyard")
			return errors.Is(err, tokens.ErrInvalidToken)
		}, 5*time.Second, 5*time.Millisecond)
	})
}

func TestBoundPodVerifierWaitsForTheWatch(t *testing.T) {
	client := fake.NewClientset()
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: client})
	require.NoError(t, err)
	runPodIndex(t, idx)
	next := &staticVerifier{accounts: map[string]*tokens.ServiceAccount{
		"new": boundSA("default", "new-1", "app", "node-a"), "never": boundSA("default", "never-1", "app", "node-a"),
	}}
	// A wait far longer than the test: only the pod's arrival ends it.
	v, err := NewBoundPodVerifier(BoundPodConfig{Cluster: "prod", Next: next, Pods: idx, Wait: time.Hour})
	require.NoError(t, err)

	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, "new", "lanyard")
		done <- err
	}()
	_, err = client.CoreV1().Pods("default").Create(ctx, pod("default", "new-1", "app", "node-a", corev1.PodPending), metav1.CreateOptions{})
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Verify did not return when the pod arrived")
	}

	t.Run("gives up after the wait", func(t *testing.T) {
		short, err := NewBoundPodVerifier(BoundPodConfig{Cluster: "prod", Next: next, Pods: idx, Wait: 20 * time.Millisecond})
		require.NoError(t, err)
		_, err = short.Verify(ctx, "never", "lanyard")
		require.ErrorIs(t, err, tokens.ErrInvalidToken)
	})

	t.Run("a token issued longer ago than the wait does not wait", func(t *testing.T) {
		old := boundSA("default", "never-1", "app", "node-a")
		old.IssuedAt = time.Now().Add(-2 * time.Hour)
		next.accounts["old"] = old
		_, err := v.Verify(ctx, "old", "lanyard") // Wait is an hour
		require.ErrorIs(t, err, tokens.ErrInvalidToken)
	})

	t.Run("stops waiting when the caller gives up", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := v.Verify(cctx, "never", "lanyard")
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestBoundPodVerifierUnavailable(t *testing.T) {
	t.Run("index not synced", func(t *testing.T) {
		idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: fake.NewClientset()})
		require.NoError(t, err)
		next := &staticVerifier{accounts: map[string]*tokens.ServiceAccount{"t": boundSA("default", "app-1", "app", "node-a")}}
		v, err := NewBoundPodVerifier(BoundPodConfig{Cluster: "prod", Next: next, Pods: idx})
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), "t", "lanyard")
		require.ErrorIs(t, err, ErrUnavailable)
	})
	t.Run("verifier unavailable", func(t *testing.T) {
		idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: fake.NewClientset()})
		require.NoError(t, err)
		v, err := NewBoundPodVerifier(BoundPodConfig{Cluster: "prod", Next: &staticVerifier{err: tokens.ErrUnavailable}, Pods: idx})
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), "t", "lanyard")
		require.ErrorIs(t, err, tokens.ErrUnavailable)
	})
}

func TestNewBoundPodVerifierValidates(t *testing.T) {
	idx, err := NewPodIndex(PodIndexConfig{Cluster: "prod", Client: fake.NewClientset()})
	require.NoError(t, err)
	next := &staticVerifier{}
	for _, tt := range []struct {
		name string
		cfg  BoundPodConfig
	}{
		{"no cluster", BoundPodConfig{Next: next, Pods: idx}},
		{"no verifier", BoundPodConfig{Cluster: "prod", Pods: idx}},
		{"no index", BoundPodConfig{Cluster: "prod", Next: next}},
		{"index of another cluster", BoundPodConfig{Cluster: "staging", Next: next, Pods: idx}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBoundPodVerifier(tt.cfg)
			require.Error(t, err)
		})
	}
}
