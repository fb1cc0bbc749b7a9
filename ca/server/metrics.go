package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lanyard-id/lanyard/storage"
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
	StoreBatches    *prometheus.CounterVec // by kind ("certificates", "audit") and result
	StoreBatchSize  prometheus.Histogram
	StoreCommit     prometheus.Histogram
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
	m.StoreBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lanyard_store_batches_total", Help: "Group-commit transactions, by kind and result.",
	}, []string{"kind", "result"})
	m.StoreBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lanyard_store_batch_records", Help: "Certificate records per group-commit transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.StoreCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lanyard_store_commit_seconds", Help: "Duration of a group-commit transaction.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	})
	reg.MustRegister(m.Issued, m.Rejected, m.Duration, m.InFlight, m.CAExpiry, m.ServingExpiry,
		m.BatchSize, m.WatchersGauge, m.BundleSequence, m.AgentsAttested, m.PanicsRecovered,
		m.StoreBatches, m.StoreBatchSize, m.StoreCommit)
	return m
}

// ObserveStoreBatch records one group-commit transaction; it fits
// storage.WriterConfig.OnBatch.
func (m *Metrics) ObserveStoreBatch(b storage.BatchResult) {
	kind, result := "certificates", "ok"
	if b.Audit {
		kind = "audit"
	}
	if b.Err != nil {
		result = "error"
	}
	m.StoreBatches.WithLabelValues(kind, result).Inc()
	if !b.Audit {
		m.StoreBatchSize.Observe(float64(b.Size))
		m.StoreCommit.Observe(b.Duration.Seconds())
	}
}

func (m *Metrics) observe(method string, start time.Time) {
	m.Duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}
