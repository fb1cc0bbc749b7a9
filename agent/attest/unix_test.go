package attest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/agent"
	"github.com/lanyard-id/lanyard/agent/attest"
)

func ptr(v uint32) *uint32 { return &v }

func TestUnixAttest(t *testing.T) {
	u, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{
		{UID: ptr(1000), GID: ptr(1000), Namespace: "dev", ServiceAccount: "alice"},
		{UID: ptr(1000), Namespace: "dev", ServiceAccount: "alice-other-group"},
		{GID: ptr(2000), Namespace: "batch", ServiceAccount: "jobs"},
	}})
	require.NoError(t, err)
	for _, tt := range []struct {
		name string
		peer attest.Peer
		want string // namespace/service account, "" for no match
	}{
		{name: "uid and gid", peer: attest.Peer{UID: 1000, GID: 1000}, want: "dev/alice"},
		{name: "uid, other gid: next rule", peer: attest.Peer{UID: 1000, GID: 2000}, want: "dev/alice-other-group"},
		{name: "gid only rule", peer: attest.Peer{UID: 1001, GID: 2000}, want: "batch/jobs"},
		{name: "no match", peer: attest.Peer{UID: 1001, GID: 1001}},
		{name: "root is not special", peer: attest.Peer{UID: 0, GID: 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := u.Attest(context.Background(), tt.peer)
			require.NoError(t, err)
			if tt.want == "" {
				require.Nil(t, got)
				return
			}
			require.Equal(t, "unix", got.Attestor)
			require.Equal(t, tt.want, got.Namespace+"/"+got.ServiceAccount)
			require.Equal(t, &agent.Attested{Attestor: "unix", Namespace: got.Namespace, ServiceAccount: got.ServiceAccount}, got)
		})
	}
}

func TestNewUnixValidates(t *testing.T) {
	for _, tt := range []struct {
		name string
		rule attest.UnixRule
	}{
		{name: "matches everyone", rule: attest.UnixRule{Namespace: "a", ServiceAccount: "b"}},
		{name: "no namespace", rule: attest.UnixRule{UID: ptr(1), ServiceAccount: "b"}},
		{name: "bad namespace", rule: attest.UnixRule{UID: ptr(1), Namespace: "Not_A_Label", ServiceAccount: "b"}},
		{name: "bad service account", rule: attest.UnixRule{UID: ptr(1), Namespace: "a", ServiceAccount: "b/c"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := attest.NewUnix(attest.UnixConfig{Rules: []attest.UnixRule{tt.rule}})
			require.Error(t, err)
		})
	}
	_, err := attest.NewUnix(attest.UnixConfig{})
	require.NoError(t, err, "no rules: identifies no one")
}
