package sds

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
)

func fetch(ctx context.Context, h *harness, token string, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return secretv3.NewSecretDiscoveryServiceClient(h.conn).FetchSecrets(ctx, req)
}

func TestFetchSecrets(t *testing.T) {
	for _, tt := range []struct {
		name      string
		token     string
		req       *discoveryv3.DiscoveryRequest
		pending   bool // alice's first SVID has not arrived
		wantCode  codes.Code
		wantNames []string
	}{
		{name: "default and ROOTCA", token: "alice-token",
			req:       &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "ROOTCA"}, TypeUrl: SecretTypeURL},
			wantNames: []string{"default", "ROOTCA"}},
		{name: "no type_url", token: "alice-token",
			req:       &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}},
			wantNames: []string{"ROOTCA"}},
		{name: "unknown names omitted", token: "alice-token",
			req:       &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "nope:x", bob.String()}},
			wantNames: []string{"default"}},
		{name: "only unknown names", token: "alice-token",
			req:       &discoveryv3.DiscoveryRequest{ResourceNames: []string{"nope:x"}},
			wantNames: []string{}},
		{name: "bundle while the SVID is pending", token: "alice-token", pending: true,
			req:       &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA", "ALL"}},
			wantNames: []string{"ROOTCA", "ALL"}},
		{name: "SVID still pending", token: "alice-token", pending: true,
			req:      &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}},
			wantCode: codes.Unavailable},
		{name: "unidentified", token: "",
			req:      &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}},
			wantCode: codes.PermissionDenied},
		{name: "wrong type_url", token: "alice-token",
			req:      &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
			wantCode: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{FetchTimeout: 100 * time.Millisecond})
			if tt.pending {
				h.ids.SetSVID(alice, nil)
			}
			resp, err := fetch(t.Context(), h, tt.token, tt.req)
			if tt.wantCode != codes.OK {
				require.Equal(t, tt.wantCode, status.Code(err), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, SecretTypeURL, resp.GetTypeUrl())
			require.NotEmpty(t, resp.GetVersionInfo())
			secrets, err := sdstest.Decode(resp)
			require.NoError(t, err)
			names := []string{}
			for _, s := range secrets {
				names = append(names, s.GetName())
			}
			require.Equal(t, tt.wantNames, names)
			if s := (&sdstest.Response{Secrets: secrets}).Secret("default"); s != nil {
				requireCert(t, s, h.ids.Identity(alice).Current())
			}
			require.Zero(t, h.ids.Live(), "the fetch's subscription is closed")
		})
	}
}

func TestFetchSecretsWaitsForFirstSVID(t *testing.T) {
	h := newHarness(t, Config{FetchTimeout: 10 * time.Second})
	h.ids.SetSVID(carol, nil)
	svid := h.ca.Issue(t, carol)
	go func() {
		// Rotate in once the fetch is waiting.
		for h.ids.Subscribed(carol) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		h.ids.SetSVID(carol, svid)
	}()
	resp, err := fetch(t.Context(), h, "carol-token", &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}})
	require.NoError(t, err)
	secrets, err := sdstest.Decode(resp)
	require.NoError(t, err)
	require.Len(t, secrets, 1)
	requireCert(t, secrets[0], svid)
}

func TestFetchSecretsCallerDeadline(t *testing.T) {
	h := newHarness(t, Config{FetchTimeout: time.Minute})
	h.ids.SetSVID(alice, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := fetch(ctx, h, "alice-token", &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err))
}
