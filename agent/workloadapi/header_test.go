package workloadapi_test

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Every Workload API call without "workload.spiffe.io: true" is refused
// before the caller is identified, with the spec's code and message.
func TestSecurityHeader(t *testing.T) {
	e := newEnv(t, t.TempDir())
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	wl := workload.NewSpiffeWorkloadAPIClient(conn)
	calls := map[string]func(context.Context) error{
		"FetchX509SVID": func(ctx context.Context) error {
			s, err := wl.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"FetchX509Bundles": func(ctx context.Context) error {
			s, err := wl.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"FetchJWTSVID": func(ctx context.Context) error {
			_, err := wl.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			return err
		},
		"FetchJWTBundles": func(ctx context.Context) error {
			s, err := wl.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"ValidateJWTSVID": func(ctx context.Context) error {
			_, err := wl.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "y"})
			return err
		},
	}
	for name, call := range calls {
		for _, tt := range []struct {
			header string
			md     []string
		}{
			{header: "missing"},
			{header: "false", md: []string{"workload.spiffe.io", "false"}},
			{header: "twice", md: []string{"workload.spiffe.io", "true", "workload.spiffe.io", "true"}},
		} {
			t.Run(name+"/"+tt.header, func(t *testing.T) {
				err := call(metadata.AppendToOutgoingContext(ctxT(t), tt.md...))
				require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
				require.Equal(t, "security header missing from request", status.Convert(err).Message())
			})
		}
	}
	// With the header, the JWT profile is not served yet.
	for _, name := range []string{"FetchJWTSVID", "FetchJWTBundles", "ValidateJWTSVID"} {
		err := calls[name](metadata.AppendToOutgoingContext(ctxT(t), "workload.spiffe.io", "true"))
		require.Equal(t, codes.Unimplemented, status.Code(err), name)
	}
	require.Empty(t, e.ids.Workloads(), "no caller without the header was even identified")
}
