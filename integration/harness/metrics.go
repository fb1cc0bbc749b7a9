package harness

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Metrics the tests read.
const (
	MetricIssued = "lanyard_ca_certificates_issued_total"
	// Node agent metrics.
	MetricOutageBudget  = "lanyard_agent_outage_budget_seconds"
	MetricRotations     = "lanyard_agent_rotations_total"
	MetricRenewFailures = "lanyard_agent_renew_failures_total"
	MetricSDSPushes     = "lanyard_agent_sds_pushes_total"
	MetricSDSNACKs      = "lanyard_agent_sds_nacks_total"
)

// Metric scrapes /metrics and returns the sum of every series of metric
// name whose labels contain each of labels (written `key="value"`). A
// metric with no series is 0.
func (d *Dev) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return scrapeMetric(t, d.HTTPAddr, name, labels)
}

// AgentMetric is Metric on the dev node agent's /metrics.
func (d *Dev) AgentMetric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return scrapeMetric(t, d.AgentHTTPAddr, name, labels)
}

func scrapeMetric(t testing.TB, addr, name string, labels []string) float64 {
	t.Helper()
	code, body, err := httpGet(addr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("harness: GET %s/metrics: %d %v", addr, code, err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var labelSet string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labelSet, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric whose name starts with name
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(labelSet, l) {
				match = false
			}
		}
		fields := strings.Fields(rest)
		if !match || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			t.Fatalf("harness: metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}
