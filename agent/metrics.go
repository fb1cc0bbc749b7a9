package agent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's Prometheus metrics.
type Metrics struct {
	// SVIDsServed counts SVIDs sent to workloads, by API ("sds", "workloadapi").
	SVIDsServed *prometheus.CounterVec
	// Rotations counts SVIDs received from the CA.
	Rotations prometheus.Counter
	// RenewFailures counts failed renewals by gRPC code.
	RenewFailures *prometheus.CounterVec
	// OutageBudget is the seconds until the earliest held SVID expires:
	// how long the agent can serve through a CA outage.
	OutageBudget prometheus.Gauge
	// SVIDsHeld is the number of SVIDs in the cache.
	SVIDsHeld prometheus.Gauge
	// Entries is the number of credentials the cache holds state for,
	// with or without an SVID.
	Entries prometheus.Gauge
	// Streams counts connected streams, by API.
	Streams *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := newUnregisteredMetrics()
	reg.MustRegister(m.SVIDsServed, m.Rotations, m.RenewFailures, m.OutageBudget, m.SVIDsHeld, m.Entries, m.Streams)
	return m
}

func newUnregisteredMetrics() *Metrics {
	return &Metrics{
		SVIDsServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lanyard_agent_svids_served_total", Help: "SVIDs sent to workloads, by API.",
		}, []string{"api"}),
		Rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lanyard_agent_rotations_total", Help: "Workload SVIDs received from the CA.",
		}),
		RenewFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lanyard_agent_renew_failures_total", Help: "Failed SVID renewals, by gRPC code.",
		}, []string{"code"}),
		OutageBudget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_agent_outage_budget_seconds", Help: "Seconds until the earliest held SVID expires.",
		}),
		SVIDsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_agent_svids_held", Help: "Workload SVIDs in the cache.",
		}),
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lanyard_agent_cache_entries", Help: "Credentials the SVID cache holds state for, with or without an SVID.",
		}),
		Streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lanyard_agent_streams", Help: "Connected SDS and Workload API streams, by API.",
		}, []string{"api"}),
	}
}

// Serving reports whether the manager holds at least one unexpired SVID
// (from the CA or the disk cache).
func (m *Manager) Serving() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock()
	for _, e := range m.entries {
		if e.svid != nil && now.Before(e.svid.Certificates[0].NotAfter) {
			return true
		}
	}
	return false
}

// updateGauges refreshes the held count and the outage budget.
func (m *Manager) updateGauges() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock()
	held := 0
	var earliest float64 = -1
	for _, e := range m.entries {
		if e.svid == nil {
			continue
		}
		held++
		left := e.svid.Certificates[0].NotAfter.Sub(now).Seconds()
		if earliest < 0 || left < earliest {
			earliest = left
		}
	}
	m.cfg.Metrics.SVIDsHeld.Set(float64(held))
	m.cfg.Metrics.Entries.Set(float64(len(m.entries)))
	m.cfg.Metrics.OutageBudget.Set(max(earliest, 0))
}
