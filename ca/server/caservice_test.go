package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lanyard-id/lanyard/ca"
	"github.com/lanyard-id/lanyard/ca/kube"
	"github.com/lanyard-id/lanyard/ca/tokens"
	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
	"github.com/lanyard-id/lanyard/storage"
)

func TestToStatus(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		code codes.Code
		msg  string // substring of the client message; "" to skip
	}{
		{"invalid CSR", fmt.Errorf("%w: RSA key of 1024 bits", ca.ErrInvalidCSR), codes.InvalidArgument, "1024 bits"},
		{"invalid request", fmt.Errorf("%w: TTL over max", ca.ErrInvalidRequest), codes.InvalidArgument, "TTL"},
		{"bad token", fmt.Errorf("%w: unknown key id", tokens.ErrInvalidToken), codes.Unauthenticated, "unknown key id"},
		{"expired", tokens.ErrExpired, codes.Unauthenticated, ""},
		{"audience", tokens.ErrWrongAudience, codes.Unauthenticated, ""},
		{"cluster", tokens.ErrUnknownCluster, codes.Unauthenticated, ""},
		{"no client cert", ErrNoClientCert, codes.Unauthenticated, ""},
		{"denied", fmt.Errorf("%w: not yours", ca.ErrPermissionDenied), codes.PermissionDenied, "not yours"},
		{"overloaded", ErrOverloaded, codes.ResourceExhausted, ""},
		{"not found", fmt.Errorf("agent on node %q: %w", "n", storage.ErrNotFound), codes.NotFound, "node"},
		{"store down", fmt.Errorf("record: %w", storage.ErrUnavailable), codes.Unavailable, "retry"},
		{"store closed", storage.ErrClosed, codes.Unavailable, ""},
		{"keys down", tokens.ErrUnavailable, codes.Unavailable, ""},
		{"kube down", kube.ErrUnavailable, codes.Unavailable, ""},
		{"not ready", ca.ErrNotReady, codes.Unavailable, ""},
		{"canceled", context.Canceled, codes.Canceled, ""},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{"stopping", ErrStopping, codes.Unavailable, "shutting down"},
		{"panic", errPanic, codes.Internal, "internal error"},
		{"a status from below is not passed through", status.Error(codes.PermissionDenied, "secret detail"), codes.Internal, "internal error"},
		{"anything else is internal and generic", errors.New("disk on fire at /var/secret"), codes.Internal, "internal error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := toStatus(tt.err)
			require.Equal(t, tt.code, s.Code())
			require.Contains(t, s.Message(), tt.msg)
			if tt.code == codes.Internal {
				require.NotContains(t, s.Message(), "secret")
			}
		})
	}
}

func TestRequestTTL(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   *durationpb.Duration
		want time.Duration
		ok   bool
	}{
		{"absent", nil, 0, true},
		{"zero", durationpb.New(0), 0, true},
		{"ten minutes", durationpb.New(10 * time.Minute), 10 * time.Minute, true},
		{"negative", durationpb.New(-time.Minute), 0, false},
		{"malformed sign", &durationpb.Duration{Seconds: 60, Nanos: -5}, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := requestTTL(tt.in)
			if !tt.ok {
				require.ErrorIs(t, err, ca.ErrInvalidRequest)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestLimiter(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	l := newLimiter(2, 50*time.Millisecond, 10, m)
	r1, err := l.acquire(context.Background())
	require.NoError(t, err)
	r2, err := l.acquire(context.Background())
	require.NoError(t, err)
	_, err = l.acquire(context.Background())
	require.ErrorIs(t, err, ErrOverloaded)
	require.Equal(t, codes.ResourceExhausted, toStatus(err).Code())
	r1()
	r3, err := l.acquire(context.Background())
	require.NoError(t, err, "a released slot is reusable")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.acquire(ctx)
	require.ErrorIs(t, err, context.Canceled)
	r2()
	r3()
}

type uidPods map[string]kube.Pod

func (f uidPods) PodByUID(_ context.Context, cluster, uid string) (kube.Pod, bool, error) {
	if cluster == "down" {
		return kube.Pod{}, false, kube.ErrUnavailable
	}
	p, ok := f[uid]
	return p, ok, nil
}

func TestAttestedPod(t *testing.T) {
	pods := uidPods{
		"uid-a": {Namespace: "shop", Name: "api-1", UID: "uid-a", ServiceAccount: "api", NodeName: "node-a"},
		"uid-b": {Namespace: "shop", Name: "web-1", UID: "uid-b", ServiceAccount: "web", NodeName: "node-b"},
	}
	att := func(uid, ns, sa string) *cav1.AttestedWorkload {
		return &cav1.AttestedWorkload{Attestor: "k8s", Namespace: ns, ServiceAccount: sa, PodUid: uid}
	}
	for _, tt := range []struct {
		name    string
		finder  PodFinder
		cluster string
		a       *cav1.AttestedWorkload
		code    codes.Code
	}{
		{"pod on the agent's node", pods, "prod", att("uid-a", "shop", "api"), codes.OK},
		{"pod on another node", pods, "prod", att("uid-b", "shop", "web"), codes.PermissionDenied},
		{"claims another service account", pods, "prod", att("uid-a", "shop", "admin"), codes.PermissionDenied},
		{"claims another namespace", pods, "prod", att("uid-a", "bank", "api"), codes.PermissionDenied},
		{"no such pod", pods, "prod", att("uid-zzz", "shop", "api"), codes.PermissionDenied},
		{"no pod index configured", nil, "prod", att("uid-a", "shop", "api"), codes.PermissionDenied},
		{"pod index not synced", pods, "down", att("uid-a", "shop", "api"), codes.Unavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &caService{pods: tt.finder}
			subj, err := s.attestedPod(context.Background(), tt.cluster, "node-a", tt.a)
			require.Equal(t, tt.code, toStatus(err).Code(), "err: %v", err)
			if tt.code == codes.OK {
				require.Equal(t, ca.Subject{Cluster: "prod", Namespace: "shop", ServiceAccount: "api", PodName: "api-1", PodUID: "uid-a", NodeName: "node-a"}, subj)
			}
		})
	}
}

func TestLimiterAdmit(t *testing.T) {
	l := newLimiter(1, time.Millisecond, 10, NewMetrics(prometheus.NewRegistry()))
	done1, err := l.admit(8)
	require.NoError(t, err)
	_, err = l.admit(3)
	require.ErrorIs(t, err, ErrOverloaded, "8 queued + 3 is over 10")
	done2, err := l.admit(2)
	require.NoError(t, err)
	done1()
	done2()
	// A batch larger than the bound is admitted when nothing else waits,
	// so that it is never refused for ever.
	done3, err := l.admit(50)
	require.NoError(t, err)
	done3()

	// Admitted entries wait for a slot as long as their call lasts.
	r, err := l.acquireAdmitted(context.Background())
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		r2, err := l.acquireAdmitted(context.Background())
		if err == nil {
			r2()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // longer than the single-request wait
	r()
	require.NoError(t, <-got)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r3, err := l.acquireAdmitted(context.Background())
	require.NoError(t, err)
	_, err = l.acquireAdmitted(ctx)
	require.ErrorIs(t, err, context.Canceled)
	r3()
}
