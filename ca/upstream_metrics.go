package ca

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UpstreamStats is how the intermediate's upstream has been doing.
type UpstreamStats struct {
	// LastSuccess is when the last intermediate was minted (zero: never).
	LastSuccess time.Time
	// Failures counts failed mints (first mint and renewals) since start.
	Failures int64
	// NotAfter is the active intermediate's expiry (zero: none).
	NotAfter time.Time
}

// UpstreamStats returns the counters of the intermediate's upstream.
func (a *Authority) UpstreamStats() UpstreamStats {
	s := UpstreamStats{Failures: a.mintFailures.Load()}
	if t := a.lastMint.Load(); t != 0 {
		s.LastSuccess = time.Unix(t, 0)
	}
	if x := a.current.Load(); x != nil {
		s.NotAfter = x.Certificate.NotAfter
	}
	return s
}

// UpstreamCollector exports an Authority's UpstreamStats, read at scrape
// time:
//
//   - lanyard_ca_upstream_last_success_timestamp_seconds: Unix time of the
//     last intermediate minted (0: none yet);
//   - lanyard_ca_upstream_failures_total: failed mints since start;
//   - lanyard_ca_upstream_intermediate_expiry_seconds: seconds until the
//     active intermediate expires (negative once expired, absent before
//     the first).
type UpstreamCollector struct {
	a                     *Authority
	last, failures, until *prometheus.Desc
}

var _ prometheus.Collector = (*UpstreamCollector)(nil)

// NewUpstreamCollector returns a collector of a's UpstreamStats.
func NewUpstreamCollector(a *Authority) *UpstreamCollector {
	return &UpstreamCollector{
		a: a,
		last: prometheus.NewDesc("lanyard_ca_upstream_last_success_timestamp_seconds",
			"Unix time the upstream last signed an intermediate (0: never).", nil, nil),
		failures: prometheus.NewDesc("lanyard_ca_upstream_failures_total",
			"Failed intermediate mints (upstream unreachable, refused, or returned a certificate that failed the checks).", nil, nil),
		until: prometheus.NewDesc("lanyard_ca_upstream_intermediate_expiry_seconds",
			"Seconds until the active intermediate expires; issuance stops at 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *UpstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.last
	ch <- c.failures
	ch <- c.until
}

// Collect implements prometheus.Collector.
func (c *UpstreamCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.UpstreamStats()
	last := 0.0
	if !s.LastSuccess.IsZero() {
		last = float64(s.LastSuccess.Unix())
	}
	ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.Failures))
	if !s.NotAfter.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.until, prometheus.GaugeValue, s.NotAfter.Sub(c.a.cfg.Clock()).Seconds())
	}
}
