package ca

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestUpstreamStatsAndCollector(t *testing.T) {
	h := newAuthHarness(t, AuthorityConfig{TTL: 2 * time.Minute, BundleRefresh: time.Hour})
	c := NewUpstreamCollector(h.auth)
	require.Equal(t, UpstreamStats{}, h.auth.UpstreamStats())
	require.Equal(t, 2, testutil.CollectAndCount(c), "no expiry before the first intermediate")

	h.up.set(func(u *fakeUpstream) { u.failMints = 1 })
	require.Error(t, h.auth.Prepare(context.Background()))
	require.NoError(t, h.auth.Prepare(context.Background()))
	x := h.current(t)
	s := h.auth.UpstreamStats()
	require.Equal(t, int64(1), s.Failures)
	require.Equal(t, h.clock.Now().Unix(), s.LastSuccess.Unix())
	require.Equal(t, x.Certificate.NotAfter, s.NotAfter)

	until := x.Certificate.NotAfter.Sub(h.clock.Now()).Seconds()
	want := "# HELP lanyard_ca_upstream_failures_total Failed intermediate mints (upstream unreachable, refused, or returned a certificate that failed the checks).\n" +
		"# TYPE lanyard_ca_upstream_failures_total counter\nlanyard_ca_upstream_failures_total 1\n"
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want), "lanyard_ca_upstream_failures_total"))
	require.Equal(t, 3, testutil.CollectAndCount(c))
	require.InDelta(t, until, gaugeValue(t, c, "lanyard_ca_upstream_intermediate_expiry_seconds"), 0.001)
	require.InDelta(t, float64(s.LastSuccess.Unix()), gaugeValue(t, c, "lanyard_ca_upstream_last_success_timestamp_seconds"), 0.001)
}

func gaugeValue(t *testing.T, c *UpstreamCollector, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
