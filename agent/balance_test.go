package agent

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDialTarget(t *testing.T) {
	for _, addr := range []string{"dns:///lanyard-ca.lanyard.svc:8443", "127.0.0.1:8443"} {
		target, opts := dialTarget(addr)
		require.Equal(t, addr, target)
		require.Len(t, opts, 1, "the service config only")
	}
	target, opts := dialTarget("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3")
	require.Equal(t, "lanyard-ca:///ca", target)
	require.Len(t, opts, 2, "service config and the list's resolver")
}
