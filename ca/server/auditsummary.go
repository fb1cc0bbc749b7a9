package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lanyard-id/lanyard/storage"
)

// auditSummary writes, every interval, how many certificates were issued
// by kind and how many requests were refused by method and code, as
// "issue-summary" and "reject-summary" audit events: the audit log tells
// what the CA did without one entry per certificate (each one is in the
// certificate log already).
type auditSummary struct {
	metrics  *Metrics
	audit    AuditRecorder
	interval time.Duration
	clock    func() time.Time
	last     map[string]float64
}

// counts reads the counters as "issued|<kind>" and "rejected|<method>|<code>".
func (s *auditSummary) counts() map[string]float64 {
	out := map[string]float64{}
	read := func(prefix string, c prometheus.Collector, labels ...string) {
		ch := make(chan prometheus.Metric, 64)
		go func() { c.Collect(ch); close(ch) }()
		for m := range ch {
			var d dto.Metric
			if m.Write(&d) != nil || d.GetCounter() == nil {
				continue
			}
			values := map[string]string{}
			for _, l := range d.GetLabel() {
				values[l.GetName()] = l.GetValue()
			}
			key := prefix
			for _, name := range labels {
				key += "|" + values[name]
			}
			out[key] = d.GetCounter().GetValue()
		}
	}
	read("issued", s.metrics.Issued, "kind")
	read("rejected", s.metrics.Rejected, "method", "code")
	return out
}

func (s *auditSummary) run(ctx context.Context) error {
	s.last = s.counts()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.write(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			s.write(ctx)
		}
	}
}

// write records the change of every counter since the last write.
func (s *auditSummary) write(ctx context.Context) {
	now := s.counts()
	var issued []string
	var events []storage.AuditEvent
	keys := make([]string, 0, len(now))
	for k := range now {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		d := now[k] - s.last[k]
		if d <= 0 {
			continue
		}
		parts := strings.Split(k, "|")
		switch {
		case parts[0] == "issued" && len(parts) == 2:
			issued = append(issued, fmt.Sprintf("%s=%d", parts[1], int64(d)))
		case parts[0] == "rejected" && len(parts) == 3:
			events = append(events, storage.AuditEvent{Actor: "system", Action: "reject-summary",
				Subject: parts[1], Outcome: parts[2], Detail: fmt.Sprintf("%d in %s", int64(d), s.interval)})
		}
	}
	s.last = now
	if len(issued) > 0 {
		events = append([]storage.AuditEvent{{Actor: "system", Action: "issue-summary", Outcome: "ok",
			Detail: strings.Join(issued, " ") + " in " + s.interval.String()}}, events...)
	}
	for _, e := range events {
		e.Time = s.clock()
		_ = s.audit.RecordAudit(ctx, e) // a full queue drops it; the writer counts drops
	}
}
