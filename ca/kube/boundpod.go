package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lanyard-id/lanyard/ca/tokens"
)

// DefaultBoundPodWait is how long BoundPodVerifier waits for a pod it has
// not seen yet before it refuses the token.
const DefaultBoundPodWait = 2 * time.Second

// BoundPodConfig configures a BoundPodVerifier.
type BoundPodConfig struct {
	// Cluster is the cluster the tokens come from; it must be the pod
	// index's cluster. Required.
	Cluster string
	// Next verifies the token itself (signature, issuer, expiry, audience),
	// typically a tokens.Cache over a tokens.JWKSVerifier. Required.
	Next tokens.Verifier
	// Pods is the cluster's pod index; it must be running. Required.
	Pods *PodIndex
	// Wait bounds how long a token whose pod is not in the index waits for
	// the watch to catch up with a pod created an instant ago: counted from
	// the token's iat, since the API server issues a pod-bound token only
	// for a pod that exists, so a token older than Wait is refused at once.
	// Default 2s; negative means no wait.
	Wait time.Duration
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives rejection details. Default: discard.
	Logger *slog.Logger
}

// BoundPodVerifier checks, after Next has verified a token, that the pod
// the token is bound to still exists: a pod with the token's pod UID, name,
// namespace, service account and (when the token names one) node, running
// or pending, in the cluster's PodIndex. Offline JWKS verification alone
// accepts a pod-bound token until its exp, long after its pod is gone; the
// API server's TokenReview would refuse it (after its caches). The check
// reads the informer's index, so it costs no API request; a token issued
// less than Wait ago whose pod is not indexed yet waits for the watch.
//
// A token of a deleted or finished pod wraps tokens.ErrInvalidToken (an
// invalid credential: codes.Unauthenticated). Before the index has synced,
// tokens get kube.ErrUnavailable. Tokens bound to no pod pass unchanged.
// It is safe for concurrent use.
type BoundPodVerifier struct {
	cluster string
	next    tokens.Verifier
	pods    *PodIndex
	wait    time.Duration
	clock   func() time.Time
	log     *slog.Logger
}

var _ tokens.Verifier = (*BoundPodVerifier)(nil)

// NewBoundPodVerifier fills the defaults of cfg, validates it and returns
// a verifier.
func NewBoundPodVerifier(cfg BoundPodConfig) (*BoundPodVerifier, error) {
	if cfg.Cluster == "" || cfg.Next == nil || cfg.Pods == nil {
		return nil, errors.New("bound pod verifier: cluster, verifier and pod index are required")
	}
	if cfg.Pods.cfg.Cluster != cfg.Cluster {
		return nil, fmt.Errorf("bound pod verifier: pod index is of cluster %q, not %q", cfg.Pods.cfg.Cluster, cfg.Cluster)
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultBoundPodWait
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BoundPodVerifier{
		cluster: cfg.Cluster, next: cfg.Next, pods: cfg.Pods, wait: cfg.Wait, clock: cfg.Clock,
		log: cfg.Logger.With("cluster", cfg.Cluster),
	}, nil
}

// Verify verifies the token with Next, then checks its bound pod.
func (v *BoundPodVerifier) Verify(ctx context.Context, token, audience string) (*tokens.ServiceAccount, error) {
	sa, err := v.next.Verify(ctx, token, audience)
	if err != nil || sa.PodUID == "" {
		return sa, err
	}
	pod, found, err := v.boundPod(ctx, sa.PodUID, v.waitFor(sa))
	switch {
	case err != nil:
		return nil, err
	case !found:
		v.log.Info("token refused: its pod is gone", "namespace", sa.Namespace, "pod", sa.PodName, "pod_uid", sa.PodUID)
		return nil, fmt.Errorf("%w: bound pod %s/%s is gone (deleted, finished or on no node)", tokens.ErrInvalidToken, sa.Namespace, sa.PodName)
	case pod.Namespace != sa.Namespace || pod.Name != sa.PodName || pod.ServiceAccount != sa.Name ||
		(sa.NodeName != "" && pod.NodeName != sa.NodeName):
		v.log.Warn("token refused: it does not match its bound pod", "namespace", sa.Namespace, "pod", sa.PodName,
			"pod_uid", sa.PodUID, "service_account", sa.Name, "node", sa.NodeName,
			"pod_namespace", pod.Namespace, "pod_name", pod.Name, "pod_service_account", pod.ServiceAccount, "pod_node", pod.NodeName)
		return nil, fmt.Errorf("%w: token does not match its bound pod", tokens.ErrInvalidToken)
	}
	return sa, nil
}

// waitFor is how long a token may wait for its pod to reach the index:
// what is left of v.wait since the token was issued (all of it when the
// token has no iat).
func (v *BoundPodVerifier) waitFor(sa *tokens.ServiceAccount) time.Duration {
	if v.wait <= 0 || sa.IssuedAt.IsZero() {
		return v.wait
	}
	return min(v.wait, sa.IssuedAt.Add(v.wait).Sub(v.clock()))
}

// boundPod looks the pod up in the index; when it is not there, it waits
// up to wait for the watch to bring it.
func (v *BoundPodVerifier) boundPod(ctx context.Context, uid string, wait time.Duration) (Pod, bool, error) {
	var deadline <-chan time.Time
	for {
		changed := v.pods.Changed()
		pod, found, err := v.pods.PodByUID(ctx, v.cluster, uid)
		if err != nil || found {
			return pod, found, err
		}
		if deadline == nil {
			if wait <= 0 {
				return Pod{}, false, nil
			}
			timer := time.NewTimer(wait)
			defer timer.Stop()
			deadline = timer.C
		}
		select {
		case <-changed:
		case <-deadline:
			return Pod{}, false, nil
		case <-ctx.Done():
			return Pod{}, false, ctx.Err()
		}
	}
}
