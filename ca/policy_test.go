package ca

import (
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestPolicyValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		policy  Policy
		wantErr string
	}{
		{name: "zero"},
		{name: "wildcards", policy: Policy{Rules: []Rule{{Namespace: "*", ServiceAccount: "*", IPAddresses: []string{"10.0.0.1", "::1"}, MaxTTL: time.Minute}}}},
		{name: "no namespace", policy: Policy{Rules: []Rule{{ServiceAccount: "api"}}}, wantErr: "policy rule 0: namespace and serviceAccount are required"},
		{name: "no service account", policy: Policy{Rules: []Rule{{Namespace: "*"}, {Namespace: "a"}}}, wantErr: "policy rule 0"},
		{name: "second rule bad", policy: Policy{Rules: []Rule{{Namespace: "*", ServiceAccount: "*"}, {Namespace: "a"}}}, wantErr: "policy rule 1"},
		{name: "bad IP", policy: Policy{Rules: []Rule{{Namespace: "a", ServiceAccount: "b", IPAddresses: []string{"10.0.0.300"}}}}, wantErr: `"10.0.0.300" is not an IP address`},
		{name: "CIDR is not an IP", policy: Policy{Rules: []Rule{{Namespace: "a", ServiceAccount: "b", IPAddresses: []string{"10.0.0.0/8"}}}}, wantErr: "not an IP address"},
		{name: "negative TTL", policy: Policy{Rules: []Rule{{Namespace: "a", ServiceAccount: "b", MaxTTL: -time.Second}}}, wantErr: "negative maxTTL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestPolicyAuthorize(t *testing.T) {
	denied := spiffeid.RequireFromString(workloadURI("kube-system", "root"))
	p := Policy{
		DenyIdentities: []spiffeid.ID{denied},
		Rules: []Rule{
			{Namespace: "web", ServiceAccount: "front", DNSNames: []string{"front.example.org"}, IPAddresses: []string{"10.0.0.1"}, MaxTTL: time.Minute},
			{Namespace: "web", ServiceAccount: "*", DNSNames: []string{"web.example.org"}},
			{Namespace: "*", ServiceAccount: "metrics", MaxTTL: time.Hour},
		},
	}
	require.NoError(t, p.Validate())
	for _, tt := range []struct {
		name    string
		ns, sa  string
		want    Grant
		wantErr error
	}{
		{name: "first rule wins", ns: "web", sa: "front", want: Grant{DNSNames: []string{"front.example.org"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, MaxTTL: time.Minute}},
		{name: "namespace wildcard sa", ns: "web", sa: "back", want: Grant{DNSNames: []string{"web.example.org"}}},
		{name: "any namespace", ns: "shop", sa: "metrics", want: Grant{MaxTTL: time.Hour}},
		{name: "no rule", ns: "shop", sa: "cart", want: Grant{}},
		{name: "denied", ns: "kube-system", sa: "root", wantErr: ErrPermissionDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := WorkloadID(testTD, tt.ns, tt.sa)
			require.NoError(t, err)
			g, err := p.Authorize(id, tt.ns, tt.sa)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, g)
		})
	}
}

func TestPolicyAgentAllowed(t *testing.T) {
	bad := spiffeid.RequireFromString("spiffe://example.org/lanyard/agent/prod/bad")
	p := Policy{DenyAgents: []spiffeid.ID{bad}}
	require.ErrorIs(t, p.AgentAllowed(bad), ErrPermissionDenied)
	require.NoError(t, p.AgentAllowed(spiffeid.RequireFromString("spiffe://example.org/lanyard/agent/prod/good")))
	require.NoError(t, (&Policy{}).AgentAllowed(bad))
}
