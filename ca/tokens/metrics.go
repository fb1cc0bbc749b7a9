package tokens

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Methods a StatsSource reports under (the "method" label).
const (
	MethodJWKS        = "jwks"
	MethodTokenReview = "tokenreview"
)

// StatsSource is a verifier that counts its work: *Cache (in front of a
// JWKSVerifier) and *TokenReviewVerifier.
type StatsSource interface {
	Stats() Stats
}

// ClusterStats names the StatsSource of one cluster for a Collector.
type ClusterStats struct {
	Cluster string
	// Method is MethodJWKS or MethodTokenReview.
	Method string
	Source StatsSource
	// Keys, when set, says when the cluster's key set was last fetched
	// (*JWKSVerifier); nil for TokenReview.
	Keys interface{ KeysFetchedAt() time.Time }
}

// Collector exports the Stats of each cluster's verifier as Prometheus
// counters, read at scrape time, labelled by cluster and method:
//
//   - lanyard_ca_token_requests_total: tokens asked to be verified;
//   - lanyard_ca_token_cache_hits_total: answered from the positive cache;
//   - lanyard_ca_token_calls_total: verified past the cache, that is
//     TokenReviews created (method tokenreview) or tokens checked against
//     the key set (method jwks).
type Collector struct {
	clusters             []ClusterStats
	requests, hits, call *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector over clusters.
func NewCollector(clusters ...ClusterStats) *Collector {
	labels := []string{"cluster", "method"}
	return &Collector{
		clusters: clusters,
		requests: prometheus.NewDesc("lanyard_ca_token_requests_total",
			"Service-account tokens asked to be verified, by cluster and method.", labels, nil),
		hits: prometheus.NewDesc("lanyard_ca_token_cache_hits_total",
			"Tokens answered from the positive cache, by cluster and method.", labels, nil),
		call: prometheus.NewDesc("lanyard_ca_token_calls_total",
			"Tokens verified past the cache: TokenReviews created (tokenreview) or checks against the key set (jwks).", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.hits
	ch <- c.call
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, cl := range c.clusters {
		s := cl.Source.Stats()
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Requests), cl.Cluster, cl.Method)
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.CacheHits), cl.Cluster, cl.Method)
		ch <- prometheus.MustNewConstMetric(c.call, prometheus.CounterValue, float64(s.Calls), cl.Cluster, cl.Method)
	}
}
