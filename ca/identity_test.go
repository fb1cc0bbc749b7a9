package ca

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestWorkloadID(t *testing.T) {
	for _, tt := range []struct {
		name   string
		td     spiffeid.TrustDomain
		ns, sa string
		want   string // empty: ErrInvalidRequest expected
	}{
		{name: "valid", td: testTD, ns: "default", sa: "api", want: "spiffe://example.org/ns/default/sa/api"},
		{name: "dotted service account", td: testTD, ns: "payments", sa: "api.v2", want: "spiffe://example.org/ns/payments/sa/api.v2"},
		{name: "digits and dashes", td: testTD, ns: "ns-1", sa: "0-sa-9", want: "spiffe://example.org/ns/ns-1/sa/0-sa-9"},
		{name: "namespace of 63", td: testTD, ns: strings.Repeat("n", 63), sa: "a", want: "spiffe://example.org/ns/" + strings.Repeat("n", 63) + "/sa/a"},
		{name: "service account of 253", td: testTD, ns: "a", sa: strings.Repeat("s", 253), want: "spiffe://example.org/ns/a/sa/" + strings.Repeat("s", 253)},
		{name: "zero trust domain", ns: "default", sa: "api"},
		{name: "empty namespace", td: testTD, ns: "", sa: "api"},
		{name: "empty service account", td: testTD, ns: "default", sa: ""},
		{name: "namespace underscore", td: testTD, ns: "my_ns", sa: "api"},
		{name: "namespace dot", td: testTD, ns: "my.ns", sa: "api"},
		{name: "namespace slash", td: testTD, ns: "ns/sa/x", sa: "api"},
		{name: "namespace space", td: testTD, ns: "my ns", sa: "api"},
		{name: "namespace percent", td: testTD, ns: "ns%2f", sa: "api"},
		{name: "namespace uppercase", td: testTD, ns: "Default", sa: "api"},
		{name: "service account uppercase", td: testTD, ns: "default", sa: "API"},
		{name: "namespace too long", td: testTD, ns: strings.Repeat("n", 64), sa: "api"},
		{name: "service account too long", td: testTD, ns: "default", sa: strings.Repeat("s", 254)},
		{name: "namespace leading dash", td: testTD, ns: "-ns", sa: "api"},
		{name: "service account trailing dash", td: testTD, ns: "default", sa: "api-"},
		{name: "namespace traversal", td: testTD, ns: "../x", sa: "api"},
		{name: "service account traversal", td: testTD, ns: "default", sa: "../x"},
		{name: "service account dotdot", td: testTD, ns: "default", sa: ".."},
		{name: "service account dot", td: testTD, ns: "default", sa: "."},
		{name: "service account slash", td: testTD, ns: "default", sa: "a/b"},
		{name: "service account empty label", td: testTD, ns: "default", sa: "a..b"},
		{name: "unicode", td: testTD, ns: "défault", sa: "api"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := WorkloadID(tt.td, tt.ns, tt.sa)
			if tt.want == "" {
				require.ErrorIs(t, err, ErrInvalidRequest)
				require.True(t, id.IsZero())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, id.String())
		})
	}
}

func TestAgentID(t *testing.T) {
	for _, tt := range []struct {
		name          string
		td            spiffeid.TrustDomain
		cluster, node string
		want          string
	}{
		{name: "valid", td: testTD, cluster: "prod", node: "node-1", want: "spiffe://example.org/lanyard/agent/prod/node-1"},
		{name: "dotted names", td: testTD, cluster: "eu.prod", node: "ip-10-0-0-1.ec2.internal", want: "spiffe://example.org/lanyard/agent/eu.prod/ip-10-0-0-1.ec2.internal"},
		{name: "zero trust domain", cluster: "prod", node: "node-1"},
		{name: "empty cluster", td: testTD, cluster: "", node: "node-1"},
		{name: "empty node", td: testTD, cluster: "prod", node: ""},
		{name: "cluster uppercase", td: testTD, cluster: "Prod", node: "node-1"},
		{name: "node uppercase", td: testTD, cluster: "prod", node: "Node-1"},
		{name: "cluster bad chars", td: testTD, cluster: "prod_1", node: "node-1"},
		{name: "node slash", td: testTD, cluster: "prod", node: "node/1"},
		{name: "node too long", td: testTD, cluster: "prod", node: strings.Repeat("n", 254)},
		{name: "cluster traversal", td: testTD, cluster: "../x", node: "node-1"},
		{name: "node traversal", td: testTD, cluster: "prod", node: "../../ns/default/sa/api"},
		{name: "node dotdot", td: testTD, cluster: "prod", node: ".."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := AgentID(tt.td, tt.cluster, tt.node)
			if tt.want == "" {
				require.ErrorIs(t, err, ErrInvalidRequest)
				require.True(t, id.IsZero())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, id.String())
		})
	}
}

func TestParseAgentIDRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name          string
		cluster, node string
	}{
		{name: "simple", cluster: "prod", node: "node-1"},
		{name: "dotted", cluster: "eu.prod", node: "ip-10-0-0-1.ec2.internal"},
		{name: "longest node", cluster: "c", node: strings.Repeat("n", 253)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := AgentID(testTD, tt.cluster, tt.node)
			require.NoError(t, err)
			cluster, node, err := ParseAgentID(testTD, id)
			require.NoError(t, err)
			require.Equal(t, tt.cluster, cluster)
			require.Equal(t, tt.node, node)
		})
	}
}

func TestParseAgentIDRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		id   string
	}{
		{name: "other trust domain", id: "spiffe://other.org/lanyard/agent/prod/node-1"},
		{name: "workload", id: "spiffe://example.org/ns/default/sa/api"},
		{name: "serving", id: "spiffe://example.org/lanyard/ca"},
		{name: "trust domain only", id: "spiffe://example.org"},
		{name: "missing node", id: "spiffe://example.org/lanyard/agent/prod"},
		{name: "extra segment", id: "spiffe://example.org/lanyard/agent/prod/node-1/x"},
		{name: "wrong second segment", id: "spiffe://example.org/lanyard/agents/prod/node-1"},
		{name: "wrong first segment", id: "spiffe://example.org/spire/agent/prod/node-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseAgentID(testTD, mustID(t, tt.id))
			require.ErrorIs(t, err, ErrPermissionDenied)
		})
	}
}

func TestServingID(t *testing.T) {
	require.Equal(t, "spiffe://example.org/lanyard/ca", ServingID(testTD).String())
}
