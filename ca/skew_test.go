package ca

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/lanyard-id/lanyard/storage/storagetest"
)

// TestClockSkew: an SVID signed just after the CA made its root and
// intermediate verifies at once for a peer whose clock is up to the
// backdate behind the CA's, and not for one further behind.
func TestClockSkew(t *testing.T) {
	for _, tt := range []struct {
		name     string
		backdate time.Duration
		behind   time.Duration
		ok       bool
	}{
		{name: "peer 4m behind, default backdate", behind: 4 * time.Minute, ok: true},
		{name: "peer 5m behind, default backdate", behind: DefaultBackdate, ok: true},
		{name: "peer 6m behind, default backdate", behind: 6 * time.Minute},
		{name: "peer 1m behind, 30s backdate", backdate: 30 * time.Second, behind: time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCA(t, caOptions{cfg: func(c *Config) { c.Backdate = tt.backdate }})
			issued, err := tc.ca.SignWorkload(context.Background(), workloadReq(t, keyP256))
			require.NoError(t, err)
			bundle := x509bundle.FromX509Authorities(testTD, tc.auth.Bundle().Roots)
			_, _, err = x509svid.Verify(issued.Chain, bundle, x509svid.WithTime(tc.clock.Now().Add(-tt.behind)))
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestBackdateCappedByTTL(t *testing.T) {
	tc := newTestCA(t, caOptions{})
	req := workloadReq(t, keyP256)
	req.TTL = 4 * time.Minute
	issued, err := tc.ca.SignWorkload(context.Background(), req)
	require.NoError(t, err)
	leaf := issued.Leaf()
	require.Equal(t, tc.clock.Now().Add(-time.Minute), leaf.NotBefore, "a quarter of the TTL")
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	require.True(t, half.After(tc.clock.Now()), "half-life counted from NotBefore is still ahead")
}

func TestBackdateConfig(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, MaxBackdate + time.Second} {
		_, err := New(Config{TrustDomain: testTD, Keys: &Authority{}, Recorder: &storagetest.Recorder{}, Backdate: d})
		require.ErrorContains(t, err, "backdate")
	}
}
