package tokens

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClusters(t *testing.T) {
	east := &countingVerifier{sa: ServiceAccount{Cluster: "east", Name: "web"}}
	west := &countingVerifier{sa: ServiceAccount{Cluster: "misconfigured", Name: "api"}}
	bad := &countingVerifier{err: fmt.Errorf("%w: test", ErrExpired)}
	for _, tt := range []struct {
		name        string
		def         string
		cluster     string
		wantName    string
		wantCluster string
		wantErr     error
	}{
		{name: "named cluster", def: "east", cluster: "west", wantName: "api", wantCluster: "west"},
		{name: "default cluster", def: "east", cluster: "", wantName: "web", wantCluster: "east"},
		{name: "unknown cluster", def: "east", cluster: "north", wantErr: ErrUnknownCluster},
		{name: "no cluster and no default", cluster: "", wantErr: ErrUnknownCluster},
		{name: "verifier error passes through", cluster: "bad", wantErr: ErrExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClusters(tt.def, map[string]Verifier{"east": east, "west": west, "bad": bad})
			require.NoError(t, err)
			sa, err := c.Verify(context.Background(), tt.cluster, "tok", testAudience)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Nil(t, sa)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantName, sa.Name)
			require.Equal(t, tt.wantCluster, sa.Cluster)
		})
	}
}

func TestNewClusters(t *testing.T) {
	v := &countingVerifier{}
	for _, tt := range []struct {
		name      string
		def       string
		verifiers map[string]Verifier
		wantErr   string
	}{
		{name: "ok", def: "east", verifiers: map[string]Verifier{"east": v}},
		{name: "ok without default", verifiers: map[string]Verifier{"east": v}},
		{name: "no verifiers", wantErr: "no verifier"},
		{name: "default not configured", def: "west", verifiers: map[string]Verifier{"east": v}, wantErr: "default cluster"},
		{name: "nil verifier", verifiers: map[string]Verifier{"east": nil}, wantErr: "nil verifier"},
		{name: "empty name", verifiers: map[string]Verifier{"": v}, wantErr: "empty cluster name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClusters(tt.def, tt.verifiers)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.def, c.Default())
		})
	}
}

func TestClustersIsACopy(t *testing.T) {
	m := map[string]Verifier{"east": &countingVerifier{}}
	c, err := NewClusters("", m)
	require.NoError(t, err)
	m["west"] = &countingVerifier{}
	require.Equal(t, []string{"east"}, c.Names())
}
