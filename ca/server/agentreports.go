package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	cav1 "github.com/lanyard-id/lanyard/proto/lanyard/ca/v1"
	"github.com/lanyard-id/lanyard/storage"
)

// DefaultReportFlush is how often what agents report on their calls
// (bundle sequence, workloads, last seen) is written to the store: agents
// list is at most this far behind, and a busy CA writes one transaction per
// interval rather than one per call.
const DefaultReportFlush = 5 * time.Second

// agentReports keeps the latest report of each agent until the next flush.
type agentReports struct {
	store    storage.Store
	interval time.Duration
	log      *slog.Logger
	mu       sync.Mutex
	pending  map[string]storage.AgentReport
}

func newAgentReports(st storage.Store, interval time.Duration, log *slog.Logger) *agentReports {
	if interval <= 0 {
		interval = DefaultReportFlush
	}
	return &agentReports{store: st, interval: interval, log: log, pending: map[string]storage.AgentReport{}}
}

// report remembers what agent id said it holds at now; nil (an older
// agent) is ignored.
func (r *agentReports) report(id string, st *cav1.AgentState, now time.Time) {
	if st == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= 100_000 { // bounded: a flush is overdue
		return
	}
	r.pending[id] = storage.AgentReport{SPIFFEID: id, LastSeen: now, BundleSeqAck: st.GetBundleSequence(), Workloads: st.GetWorkloads()}
}

// run flushes every interval until ctx ends, then once more.
func (r *agentReports) run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			r.flush(fctx)
			return nil
		case <-t.C:
			r.flush(ctx)
		}
	}
}

func (r *agentReports) flush(ctx context.Context) {
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return
	}
	batch := make([]storage.AgentReport, 0, len(r.pending))
	for _, rep := range r.pending {
		batch = append(batch, rep)
	}
	clear(r.pending)
	r.mu.Unlock()
	if err := r.store.ReportAgents(ctx, batch); err != nil {
		r.log.Warn("write agent reports", "agents", len(batch), "error", err)
	}
}
