package sds

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the server's counters; a nil field is not counted. Streams
// and SVIDsServed are usually the agent's own vectors with api="sds"
// (agent.Metrics.Streams, agent.Metrics.SVIDsServed).
type Metrics struct {
	// Streams is the number of connected StreamSecrets streams.
	Streams prometheus.Gauge
	// Pushes counts responses sent on streams.
	Pushes prometheus.Counter
	// NACKs counts responses a client rejected.
	NACKs prometheus.Counter
	// SVIDsServed counts TlsCertificates sent (streams and fetches).
	SVIDsServed prometheus.Counter
}

// NewMetrics creates Pushes and NACKs and registers them on reg; set
// Streams and SVIDsServed from the agent's metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lanyard_agent_sds_pushes_total", Help: "SDS responses sent on streams.",
		}),
		NACKs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lanyard_agent_sds_nacks_total", Help: "SDS responses rejected by clients.",
		}),
	}
	reg.MustRegister(m.Pushes, m.NACKs)
	return m
}

func (m *Metrics) streamOpened() {
	if m != nil && m.Streams != nil {
		m.Streams.Inc()
	}
}

func (m *Metrics) streamClosed() {
	if m != nil && m.Streams != nil {
		m.Streams.Dec()
	}
}

func (m *Metrics) pushed() {
	if m != nil && m.Pushes != nil {
		m.Pushes.Inc()
	}
}

func (m *Metrics) nacked() {
	if m != nil && m.NACKs != nil {
		m.NACKs.Inc()
	}
}

func (m *Metrics) served(a answer) {
	if m == nil || m.SVIDsServed == nil {
		return
	}
	if a.certificates > 0 {
		m.SVIDsServed.Add(float64(a.certificates))
	}
}
