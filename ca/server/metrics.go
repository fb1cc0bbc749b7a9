package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the CA's Prometheus metrics.
type Metrics struct {
	Issued          *prometheus.CounterVec   // by kind
	Rejected        *prometheus.CounterVec   // by method and code
	Duration        *prometheus.HistogramVec // by method
	InFlight        prometheus.Gauge
	CAExpiry        *prometheus.GaugeVec // unix seconds, by cert ("intermediate", "root")
	ServingExpiry   prometheus.Gauge
	BatchSize       prometheus.Histogram
	WatchersGauge   prometheus.Gauge
	BundleSequence  prometheus.Gauge
	AgentsAttested  prometheus.Counter
	PanicsRecovered prometheus.Counter
}

// NewMetrics creates and registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lanyard_ca_certificates_issued_total", Help: "Certificates signed and recorded, by kind.",
		}, []string{"kind"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lanyard_ca_requests_rejected_total", Help: "Requests or batch entries refused, by method and gRPC code.",
		}, []string{"method", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lanyard_ca_request_duration_seconds", Help: "gRPC request latency, by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_ca_signing_in_flight", Help: "Signing operations in progress.",
		}),
		CAExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lanyard_ca_certificate_expiry_timestamp_seconds", Help: "NotAfter of the CA's certificates (unix seconds), by role.",
		}, []string{"role"}),
		ServingExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_ca_serving_certificate_expiry_timestamp_seconds", Help: "NotAfter of the CA's TLS serving certificate (unix seconds).",
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lanyard_ca_batch_entries", Help: "Entries per BatchSignSVIDs call.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		WatchersGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_ca_bundle_watchers", Help: "Open WatchBundle streams.",
		}),
		BundleSequence: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_ca_bundle_sequence", Help: "Sequence number of the current trust bundle.",
		}),
		AgentsAttested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lanyard_ca_agents_attested_total", Help: "Successful agent attestations.",
		}),
		PanicsRecovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lanyard_ca_panics_recovered_total", Help: "Panics caught by the recovery interceptor.",
		}),
	}
	reg.MustRegister(m.Issued, m.Rejected, m.Duration, m.InFlight, m.CAExpiry, m.ServingExpiry,
		m.BatchSize, m.WatchersGauge, m.BundleSequence, m.AgentsAttested, m.PanicsRecovered)
	return m
}

func (m *Metrics) observe(method string, start time.Time) {
	m.Duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}
