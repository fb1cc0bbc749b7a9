package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	istiopb "istio.io/api/security/v1alpha1"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
)

func TestUnauthenticatedRequestSize(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{})
	ctx := context.Background()
	big := strings.Repeat("x", DefaultUnauthenticatedMaxMsgSize)

	_, err := cav1.NewCAServiceClient(e.conn).AttestAgent(ctx, &cav1.AttestAgentRequest{Token: big})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	_, err = cav1.NewCAServiceClient(e.conn).AttestAgent(ctx, &cav1.AttestAgentRequest{Token: big[:MaxTokenSize+1]})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "under the size limit, the token bound answers")

	_, err = e.call(t, &istiopb.IstioCertificateRequest{Csr: big}, bearer(e.token(t, "default", "app"), "")...)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)

	stream, err := cav1.NewCAServiceClient(e.conn).WatchBundle(ctx, &cav1.WatchBundleRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err, "a small WatchBundle request passes")
}

func TestHeaderListSize(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{limits: Limits{MaxHeaderListSize: 8 << 10}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-padding", strings.Repeat("x", 16<<10))
	_, err := cav1.NewCAServiceClient(e.conn).GetBundle(ctx, &cav1.GetBundleRequest{})
	require.Error(t, err, "metadata over the header list limit is refused")
	_, err = cav1.NewCAServiceClient(e.conn).GetBundle(context.Background(), &cav1.GetBundleRequest{})
	require.NoError(t, err)
}

func TestWatchBundleStreamsPerPeer(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{limits: Limits{MaxWatchStreamsPerAddress: 2}})
	client := cav1.NewCAServiceClient(e.conn)
	open := func(ctx context.Context) error {
		s, err := client.WatchBundle(ctx, &cav1.WatchBundleRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	require.NoError(t, open(ctx1))
	require.NoError(t, open(ctx2))
	err := open(context.Background())
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)

	// A closed stream frees its place (once the server has seen it end).
	cancel1()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return open(ctx) == nil
	}, 10*time.Second, 20*time.Millisecond)
}

func TestMaxConcurrentStreams(t *testing.T) {
	e := newIstioEnv(t, istioEnvOptions{limits: Limits{MaxConcurrentStreams: 1}})
	client := cav1.NewCAServiceClient(e.conn)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := client.WatchBundle(ctx, &cav1.WatchBundleRequest{})
	require.NoError(t, err)
	_, err = s.Recv()
	require.NoError(t, err)

	// The connection's one stream is taken: a second call waits.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err = client.GetBundle(short, &cav1.GetBundleRequest{})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)

	cancel()
	_, err = client.GetBundle(context.Background(), &cav1.GetBundleRequest{})
	require.NoError(t, err, "the stream's end frees the quota")
}
