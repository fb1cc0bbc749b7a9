package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/lanyard-id/lanyard/agent/attest"
)

func TestAdminAuthenticate(t *testing.T) {
	admin := spiffeid.RequireFromString("spiffe://example.org/ns/ops/sa/admin")
	a := &adminService{cfg: AdminConfig{AllowedUIDs: []uint32{0, 1000}, AdminIDs: []spiffeid.ID{admin}}}
	unixPeer := func(uid uint32) context.Context {
		return peer.NewContext(t.Context(), &peer.Peer{AuthInfo: attest.AuthInfo{Peer: attest.Peer{UID: uid}}})
	}
	tlsPeer := func(uris ...string) context.Context {
		info := credentials.TLSInfo{}
		if uris != nil {
			leaf := &x509.Certificate{}
			for _, u := range uris {
				pu, err := url.Parse(u)
				require.NoError(t, err)
				leaf.URIs = append(leaf.URIs, pu)
			}
			info.State = tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
		}
		return peer.NewContext(t.Context(), &peer.Peer{AuthInfo: info})
	}
	for _, tt := range []struct {
		name  string
		ctx   context.Context
		actor string
		code  codes.Code
	}{
		{"allowed uid", unixPeer(1000), "uid:1000", codes.OK},
		{"root", unixPeer(0), "uid:0", codes.OK},
		{"other uid", unixPeer(65534), "uid:65534", codes.PermissionDenied},
		{"admin SVID", tlsPeer(admin.String()), admin.String(), codes.OK},
		{"other SVID", tlsPeer("spiffe://example.org/ns/default/sa/default"), "spiffe://example.org/ns/default/sa/default", codes.PermissionDenied},
		{"admin ID of another trust domain", tlsPeer("spiffe://other.org/ns/ops/sa/admin"), "spiffe://other.org/ns/ops/sa/admin", codes.PermissionDenied},
		{"no client certificate", tlsPeer(), "anonymous", codes.Unauthenticated},
		{"two URIs", tlsPeer(admin.String(), admin.String()), "anonymous", codes.Unauthenticated},
		{"not a SPIFFE ID", tlsPeer("https://example.org/admin"), "anonymous", codes.Unauthenticated},
		{"no peer", t.Context(), "anonymous", codes.Unauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			actor, err := a.authenticate(tt.ctx)
			require.Equal(t, tt.actor, actor)
			require.Equal(t, tt.code, toStatus(err).Code(), "%v", err)
		})
	}
}
