package sds

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/agenttest"
	"github.com/lanyard-id/lanyard/agent/sds/sdstest"
	"github.com/lanyard-id/lanyard/ca/catest"
)

func TestSecretTypeURL(t *testing.T) {
	require.Equal(t, "type.googleapis.com/"+string(proto.MessageName(&tlsv3.Secret{})), SecretTypeURL)
}

func TestResolve(t *testing.T) {
	ca, fed := catest.New(t, catest.Options{TrustDomain: tdLocal}), catest.New(t, catest.Options{TrustDomain: tdFed})
	svid := ca.Issue(t, alice)
	both := x509bundle.NewSet(ca.Bundle(), fed.Bundle())
	ready := view{caller: alice, svid: svid, bundles: both}

	for _, tt := range []struct {
		name                   string
		names                  []string
		view                   view
		served, pending, omits []string
	}{
		{name: "default and ROOTCA", names: []string{"default", "ROOTCA"}, view: ready,
			served: []string{"default", "ROOTCA"}},
		{name: "repeated and empty names", names: []string{"ROOTCA", "", "ROOTCA"}, view: ready,
			served: []string{"ROOTCA"}},
		{name: "own SPIFFE ID", names: []string{alice.String()}, view: ready,
			served: []string{alice.String()}},
		{name: "another SPIFFE ID", names: []string{bob.String()}, view: ready,
			omits: []string{bob.String()}},
		{name: "trust domains by ID and by name", names: []string{"spiffe://cluster.local", "example.org", "spiffe://unknown.test"},
			view:   ready,
			served: []string{"spiffe://cluster.local", "example.org"}, omits: []string{"spiffe://unknown.test"}},
		{name: "ALL", names: []string{"ALL"}, view: ready, served: []string{"ALL"}},
		{name: "unknown names", names: []string{"file-root:/etc/ca.pem", "spiffe://bad id", "Default"}, view: ready,
			omits: []string{"file-root:/etc/ca.pem", "spiffe://bad id", "Default"}},
		{name: "wildcard", names: nil, view: ready,
			served: []string{alice.String(), "spiffe://cluster.local", "spiffe://example.org"}},
		{name: "SVID pending", names: []string{"default", alice.String(), "ROOTCA"},
			view:   view{caller: alice, bundles: both},
			served: []string{"ROOTCA"}, pending: []string{"default", alice.String()}},
		{name: "bundle pending", names: []string{"default", "ROOTCA", "ALL", "spiffe://cluster.local"},
			view:   view{caller: alice, svid: svid},
			served: []string{"default"}, pending: []string{"ROOTCA", "ALL", "spiffe://cluster.local"}},
		{name: "SVID of another identity in the subscription", names: []string{"default"},
			view:  view{caller: bob, svid: svid, bundles: both},
			omits: []string{"default"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			names, err := normalize(tt.names)
			require.NoError(t, err)
			a, err := resolve(names, tt.view)
			require.NoError(t, err)
			require.Equal(t, tt.served, a.served)
			require.Equal(t, tt.pending, a.pending)
			require.Equal(t, tt.omits, a.omitted)
			require.Len(t, a.resources, len(tt.served))
			require.NotEmpty(t, a.version)
		})
	}
}

func TestResolveALL(t *testing.T) {
	ca, fed := catest.New(t, catest.Options{TrustDomain: tdLocal}), catest.New(t, catest.Options{TrustDomain: tdFed})
	a, err := resolve([]string{"ALL"}, view{caller: alice, bundles: x509bundle.NewSet(fed.Bundle(), ca.Bundle())})
	require.NoError(t, err)
	var s tlsv3.Secret
	require.NoError(t, a.resources[0].UnmarshalTo(&s))
	custom := s.GetValidationContext().GetCustomValidatorConfig()
	require.Equal(t, SPIFFEValidatorName, custom.GetName())
	require.Nil(t, s.GetValidationContext().GetTrustedCa())
	var cfg tlsv3.SPIFFECertValidatorConfig
	require.NoError(t, custom.GetTypedConfig().UnmarshalTo(&cfg))
	require.Len(t, cfg.GetTrustDomains(), 2)
	for i, want := range []*catest.CA{ca, fed} { // sorted by name: cluster.local, example.org
		require.Equal(t, want.TrustDomain.Name(), cfg.GetTrustDomains()[i].GetName())
		require.Equal(t, string(encodeCerts(want.Bundle().X509Authorities())),
			string(cfg.GetTrustDomains()[i].GetTrustBundle().GetInlineBytes()))
	}
}

func TestResolveVersion(t *testing.T) {
	ca := catest.New(t, catest.Options{TrustDomain: tdLocal})
	svid := ca.Issue(t, alice)
	set := x509bundle.NewSet(ca.Bundle())
	version := func(names []string, svid *x509svid.SVID, set *x509bundle.Set) string {
		t.Helper()
		a, err := resolve(names, view{caller: alice, svid: svid, bundles: set})
		require.NoError(t, err)
		return a.version
	}
	names := []string{"default", "ROOTCA"}
	v := version(names, svid, set)
	require.Equal(t, v, version(names, svid, x509bundle.NewSet(ca.Bundle())), "same content, same version")
	require.NotEqual(t, v, version(names, ca.Issue(t, alice), set), "rotation")
	require.NotEqual(t, v, version(names, svid, x509bundle.NewSet(catest.New(t, catest.Options{TrustDomain: tdLocal}).Bundle())), "bundle change")
	require.NotEqual(t, v, version([]string{"default"}, svid, set), "other names")
}

func TestNew(t *testing.T) {
	_, err := New(Config{Identities: agenttest.New(nil)})
	require.Error(t, err)
	_, err = New(Config{Identifier: tokenIdentifier{}})
	require.Error(t, err)
	s, err := New(Config{Identifier: tokenIdentifier{}, Identities: agenttest.New(nil)})
	require.NoError(t, err)
	require.Equal(t, DefaultFetchTimeout, s.cfg.FetchTimeout)
	require.NotNil(t, s.log)
}

func TestValidateRejectsEmptyCertificate(t *testing.T) {
	// The test client NACKs what Envoy would reject; keep it honest.
	empty, err := resolve([]string{"default"}, view{caller: alice, svid: &x509svid.SVID{ID: alice}})
	require.NoError(t, err)
	require.Empty(t, empty.resources, "the server never builds an empty certificate")
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", Nonce: "n", TypeUrl: SecretTypeURL}
	err = sdstest.Validate(resp, []*tlsv3.Secret{{Name: "default",
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}}})
	require.ErrorContains(t, err, "empty certificate")
}

func TestNormalizeLimits(t *testing.T) {
	many := make([]string, 100_000)
	for i := range many {
		many[i] = fmt.Sprintf("spiffe://cluster.local/ns/default/sa/n%d", i)
	}
	for _, tt := range []struct {
		name    string
		names   []string
		wantErr string
	}{
		{name: "100k names", names: many, wantErr: "at most 64"},
		{name: "65 names", names: many[:MaxResourceNames+1], wantErr: "at most 64"},
		{name: "64 names", names: many[:MaxResourceNames]},
		{name: "64 repeated names", names: slices.Repeat([]string{"default"}, MaxResourceNames)},
		{name: "name too long", names: []string{strings.Repeat("x", MaxResourceNameLength+1)}, wantErr: "bytes"},
		{name: "longest name", names: []string{strings.Repeat("x", MaxResourceNameLength)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := normalize(tt.names)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, agent.ErrBadRequest)
				require.Equal(t, codes.InvalidArgument, status.Code(agent.Status(slog.New(slog.DiscardHandler), "test", err)))
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NotEmpty(t, out)
		})
	}
}
