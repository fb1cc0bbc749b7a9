package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// commitCertificates writes one batch and answers every request in it.
func (w *Writer) commitCertificates(ctx context.Context, batch []*certRequest) {
	recs := make([]CertificateRecord, len(batch))
	for i, r := range batch {
		recs[i] = r.rec
	}
	err := w.recordCertificates(ctx, recs)
	if err == nil {
		for _, r := range batch {
			r.done <- nil
		}
		return
	}
	if len(batch) > 1 && isRecordError(err) {
		w.split.Add(1)
		w.log.LogAttrs(ctx, slog.LevelDebug, "storage writer splitting batch after a record error",
			slog.Int("size", len(batch)), slog.String("error", err.Error()))
		w.bisect(ctx, batch, recs)
		return
	}
	w.fail(ctx, batch, err)
}

// bisect retries a batch that failed because of one of its records (a
// duplicate serial) as two halves, recursively, so that the other records
// still commit and only the culprit gets the error: about 2·log2(n)
// transactions for one bad record among n, instead of n one by one.
func (w *Writer) bisect(ctx context.Context, batch []*certRequest, recs []CertificateRecord) {
	mid := len(batch) / 2
	for _, h := range [2][2]int{{0, mid}, {mid, len(batch)}} {
		b, r := batch[h[0]:h[1]], recs[h[0]:h[1]]
		err := w.recordCertificates(ctx, r)
		switch {
		case err == nil:
			for _, req := range b {
				req.done <- nil
			}
		case len(b) > 1 && isRecordError(err):
			w.bisect(ctx, b, r)
		case len(b) == 1:
			b[0].done <- w.answer(b[0].rec, err)
		default:
			w.fail(ctx, b, err)
		}
	}
}

// fail answers every request of a failed transaction.
func (w *Writer) fail(ctx context.Context, batch []*certRequest, err error) {
	w.log.LogAttrs(ctx, slog.LevelWarn, "storage writer batch failed",
		slog.Int("size", len(batch)), slog.String("error", err.Error()))
	for _, r := range batch {
		r.done <- w.answer(r.rec, err)
	}
}

// recordCertificates is one store transaction with its accounting.
func (w *Writer) recordCertificates(ctx context.Context, recs []CertificateRecord) error {
	ctx, cancel := context.WithTimeout(ctx, w.commitTimeout)
	defer cancel()
	start := w.clock()
	err := w.store.RecordCertificates(ctx, recs)
	d := w.clock().Sub(start)
	w.batches.Add(1)
	w.lastBatch.Store(int64(len(recs)))
	if err == nil {
		w.records.Add(uint64(len(recs)))
	} else if len(recs) == 1 || !isRecordError(err) {
		w.failed.Add(uint64(len(recs)))
	}
	if w.onBatch != nil {
		w.onBatch(BatchResult{Size: len(recs), Duration: d, Err: err})
	}
	return err
}

// isRecordError reports an error caused by a record rather than by the
// store: retrying the batch without that record may succeed.
func isRecordError(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalidArgument)
}

// answer is the error Record returns for rec after the store said err:
// record errors as they are, anything else as ErrUnavailable, so that no
// caller mistakes a failed commit for a reason to answer anything but
// Unavailable.
func (w *Writer) answer(rec CertificateRecord, err error) error {
	switch {
	case err == nil:
		return nil
	case isRecordError(err), errors.Is(err, ErrUnavailable):
		return fmt.Errorf("record certificate %s: %w", rec.Serial, err)
	default:
		return fmt.Errorf("record certificate %s: %w: %v", rec.Serial, ErrUnavailable, err)
	}
}

// RecordAudit queues ev for the next audit transaction and returns without
// waiting for it: the audit log is best effort. A zero ev.Time is set to
// the writer's clock now. It fails when ctx has ended, when ev fails
// Validate, when the queue is full (the event is dropped; the error wraps
// ErrUnavailable) and after Run has ended (ErrClosed). Events whose
// transaction fails are logged, counted in AuditDropped and lost.
func (w *Writer) RecordAudit(ctx context.Context, ev AuditEvent) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record audit event: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return err
	}
	if ev.Time.IsZero() {
		ev.Time = w.clock()
	}
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return fmt.Errorf("record audit event: %w", errWriterClosed)
	case len(w.audit) >= w.maxAuditQueue:
		w.mu.Unlock()
		w.auditDrops.Add(1)
		return fmt.Errorf("record audit event: queue full: %w", ErrUnavailable)
	}
	w.audit = append(w.audit, ev)
	w.mu.Unlock()
	w.signal()
	return nil
}

// commitAudit writes one batch of audit events; on failure they are lost.
func (w *Writer) commitAudit(ctx context.Context, events []AuditEvent) {
	ctx, cancel := context.WithTimeout(ctx, w.commitTimeout)
	defer cancel()
	start := w.clock()
	err := w.store.AppendAudit(ctx, events)
	d := w.clock().Sub(start)
	w.auditBatches.Add(1)
	if err != nil {
		w.auditDrops.Add(uint64(len(events)))
		w.log.LogAttrs(ctx, slog.LevelWarn, "storage writer dropped audit events",
			slog.Int("size", len(events)), slog.String("error", err.Error()))
	} else {
		w.auditEvents.Add(uint64(len(events)))
	}
	if w.onBatch != nil {
		w.onBatch(BatchResult{Audit: true, Size: len(events), Duration: d, Err: err})
	}
}
