package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Writer defaults.
const (
	DefaultMaxBatch      = 512
	DefaultCommitTimeout = 10 * time.Second
	DefaultDrainTimeout  = 5 * time.Second
	DefaultMaxAuditQueue = 4096
	// DefaultCommitDelay and DefaultCommitSiblings: see WriterConfig.
	DefaultCommitDelay    = time.Millisecond
	DefaultCommitSiblings = 32
)

// errWriterClosed is returned for work the writer refuses or gives up on
// because Run has ended. It wraps ErrUnavailable too: the CA answers
// codes.Unavailable and the client retries elsewhere.
var errWriterClosed = fmt.Errorf("storage writer: %w: %w", ErrClosed, ErrUnavailable)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Store receives the batches. Required.
	Store Store
	// MaxBatch bounds the records (or audit events) of one transaction.
	// Default: DefaultMaxBatch.
	MaxBatch int
	// Logger receives failed batches. Default: discard.
	Logger *slog.Logger
	// Clock times batches and stamps audit events without a time.
	// Default: time.Now. After waits as time.After does (the default): the
	// commit delay's steps; tests inject both.
	Clock func() time.Time
	After func(time.Duration) <-chan time.Time
	// CommitTimeout bounds one store call. Default: DefaultCommitTimeout.
	CommitTimeout time.Duration
	// DrainTimeout bounds the flush of what is queued once Run's context
	// ends. Default: DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MaxAuditQueue bounds the audit events waiting for a transaction;
	// RecordAudit drops events beyond it. Default: DefaultMaxAuditQueue.
	MaxAuditQueue int
	// CommitDelay is how long the writer waits, while it is busy, for a
	// small batch to fill before the next transaction (PostgreSQL's
	// commit_delay): fewer, larger transactions cost less per record. It
	// applies only right after a transaction and only while fewer than
	// CommitSiblings records wait, so a lone record on an idle writer
	// commits at once. Default DefaultCommitDelay; negative disables it.
	CommitDelay time.Duration
	// CommitSiblings: no delay once this many records wait. Default
	// DefaultCommitSiblings.
	CommitSiblings int
	// OnBatch, when set, is called from Run's goroutine after every
	// transaction the writer attempts, for metrics. It must not block.
	OnBatch func(BatchResult)
}

// BatchResult describes one transaction attempted by a Writer.
type BatchResult struct {
	// Audit is true for a batch of audit events, false for certificates.
	Audit bool
	// Size is the number of records or events in the transaction.
	Size     int
	Duration time.Duration
	// Err is the store's error, nil when the transaction committed.
	Err error
}

// WriterStats are counters since NewWriter.
type WriterStats struct {
	Batches       uint64 // certificate transactions attempted, retries included
	Records       uint64 // certificates committed
	Failed        uint64 // certificates answered with an error by the store
	ConflictSplit uint64 // batches split and retried after ErrConflict
	LastBatchSize int    // records in the latest certificate transaction
	Queued        int    // certificates waiting for a transaction now
	AuditBatches  uint64 // audit transactions attempted
	AuditEvents   uint64 // audit events committed
	AuditDropped  uint64 // audit events lost: queue full or store failure
}

// Writer is the group-commit front of a Store for the CA's hot path:
// concurrent Record calls share transactions, so the cost of a durable
// commit (an fsync) is paid once per batch instead of once per certificate.
//
// While one transaction is in flight, new requests queue; the next
// transaction takes everything queued, up to MaxBatch. There is no timer: a
// lone request on an idle writer commits at once.
//
// Run owns the loop; Record and RecordAudit may be called from any
// goroutine, before or while Run runs.
type Writer struct {
	commitDelay    time.Duration
	commitSiblings int
	store          Store
	maxBatch       int
	log            *slog.Logger
	clock          func() time.Time
	after          func(time.Duration) <-chan time.Time
	commitTimeout  time.Duration
	drainTimeout   time.Duration
	maxAuditQueue  int
	onBatch        func(BatchResult)

	mu     sync.Mutex
	certs  []*certRequest
	audit  []AuditEvent
	closed bool

	wake    chan struct{} // capacity 1: "the queues may be non-empty"
	started atomic.Bool

	batches, records, failed, split       atomic.Uint64
	lastBatch                             atomic.Int64
	auditBatches, auditEvents, auditDrops atomic.Uint64
}

type certRequest struct {
	ctx  context.Context
	rec  CertificateRecord
	done chan error // capacity 1, written once by Run
}

// NewWriter returns a Writer for cfg.Store. Call Run to start it.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Store == nil {
		return nil, errors.New("storage writer: nil Store")
	}
	if cfg.MaxBatch < 0 || cfg.CommitTimeout < 0 || cfg.DrainTimeout < 0 || cfg.MaxAuditQueue < 0 {
		return nil, errors.New("storage writer: negative MaxBatch, timeout or queue size")
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.MaxAuditQueue == 0 {
		cfg.MaxAuditQueue = DefaultMaxAuditQueue
	}
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = DefaultCommitDelay
	}
	if cfg.CommitSiblings <= 0 {
		cfg.CommitSiblings = DefaultCommitSiblings
	}
	return &Writer{
		commitDelay:    cfg.CommitDelay,
		commitSiblings: cfg.CommitSiblings,
		store:          cfg.Store,
		maxBatch:       cfg.MaxBatch,
		log:            cfg.Logger,
		clock:          cfg.Clock,
		after:          cfg.After,
		commitTimeout:  cfg.CommitTimeout,
		drainTimeout:   cfg.DrainTimeout,
		maxAuditQueue:  cfg.MaxAuditQueue,
		onBatch:        cfg.OnBatch,
		wake:           make(chan struct{}, 1),
	}, nil
}

// Record queues rec and waits until it is durable in the store (nil) or
// has failed. Errors:
//
//   - ErrInvalidArgument: rec fails Validate; nothing was queued.
//   - ErrConflict: its serial is already recorded. Other records of the
//     same transaction are not affected: the writer retries the batch in
//     halves until the culprit is alone.
//   - ErrUnavailable: the store could not commit it (ErrClosed too once
//     Run has ended). Do not hand out the certificate.
//   - the context's error when ctx ends first. The record may still be
//     committed afterwards (it is skipped if its transaction has not
//     started yet); a recorded certificate that was never handed out is
//     harmless, the reverse is what the writer prevents.
func (w *Writer) Record(ctx context.Context, rec CertificateRecord) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record certificate %s: %w", rec.Serial, err)
	}
	if err := rec.Validate(); err != nil {
		return err
	}
	req := &certRequest{ctx: ctx, rec: rec, done: make(chan error, 1)}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("record certificate %s: %w", rec.Serial, errWriterClosed)
	}
	w.certs = append(w.certs, req)
	w.mu.Unlock()
	w.signal()

	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		select { // prefer a result that is already there
		case err := <-req.done:
			return err
		default:
			return fmt.Errorf("record certificate %s: %w", rec.Serial, ctx.Err())
		}
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	queued := len(w.certs)
	w.mu.Unlock()
	return WriterStats{
		Batches:       w.batches.Load(),
		Records:       w.records.Load(),
		Failed:        w.failed.Load(),
		ConflictSplit: w.split.Load(),
		LastBatchSize: int(w.lastBatch.Load()),
		Queued:        queued,
		AuditBatches:  w.auditBatches.Load(),
		AuditEvents:   w.auditEvents.Load(),
		AuditDropped:  w.auditDrops.Load(),
	}
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run commits queued records until ctx ends. Then it stops accepting work
// (Record and RecordAudit return errors wrapping ErrClosed), flushes what
// is queued within DrainTimeout, fails the rest with ErrUnavailable, and
// returns nil. Run may be called once.
func (w *Writer) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("storage writer: Run called twice")
	}
	// Commits outlive ctx: a transaction in flight when ctx ends finishes,
	// and its callers get its real outcome.
	commitCtx := context.WithoutCancel(ctx)
	for {
		w.flush(ctx, commitCtx)
		if ctx.Err() != nil {
			w.shutdown(commitCtx)
			return nil
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		}
	}
}

// flush commits batches until the queues are empty or stop ends.
func (w *Writer) flush(stop, commitCtx context.Context) {
	var (
		certs []*certRequest
		audit []AuditEvent
	)
	busy := false
	for stop.Err() == nil {
		if busy && w.commitDelay > 0 {
			w.waitForCompany(stop)
		}
		certs, audit = w.take(certs[:0], audit[:0])
		if len(certs) == 0 && len(audit) == 0 {
			return
		}
		// Certificates first: callers are waiting for them.
		if len(certs) > 0 {
			w.commitCertificates(commitCtx, certs)
		}
		busy = len(certs) > 0
		if len(audit) > 0 {
			w.commitAudit(commitCtx, audit)
		}
		clear(certs) // drop references to finished requests
	}
}

// waitForCompany waits, up to commitDelay, while certificate requests keep
// arriving and fewer than commitSiblings wait: it stops as soon as the
// queue is empty or has not grown for a quarter of the delay, so callers
// that are all already waiting are not held back.
func (w *Writer) waitForCompany(stop context.Context) {
	step := max(w.commitDelay/4, 25*time.Microsecond)
	last := -1
	for waited := time.Duration(0); waited < w.commitDelay; waited += step {
		w.mu.Lock()
		n := len(w.certs)
		w.mu.Unlock()
		if n == 0 || n >= w.commitSiblings || n == last {
			return
		}
		last = n
		select {
		case <-stop.Done():
			return
		case <-w.after(step):
		}
	}
}

// take moves up to maxBatch certificate requests and audit events from the
// queues into certs and audit. Requests whose caller has gone are answered
// and skipped.
func (w *Writer) take(certs []*certRequest, audit []AuditEvent) ([]*certRequest, []AuditEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.certs {
		if len(certs) == w.maxBatch {
			break
		}
		n++
		if err := r.ctx.Err(); err != nil {
			r.done <- err // nobody reads it; Record already returned
			continue
		}
		certs = append(certs, r)
	}
	rest := copy(w.certs, w.certs[n:])
	clear(w.certs[rest:])
	w.certs = w.certs[:rest]

	m := min(len(w.audit), w.maxBatch)
	audit = append(audit, w.audit[:m]...)
	rest = copy(w.audit, w.audit[m:])
	w.audit = w.audit[:rest]
	return certs, audit
}

// shutdown closes the writer, flushes the queues within drainTimeout and
// fails what is left.
func (w *Writer) shutdown(commitCtx context.Context) {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()

	drainCtx, cancel := context.WithTimeout(commitCtx, w.drainTimeout)
	defer cancel()
	w.flush(drainCtx, drainCtx)

	w.mu.Lock()
	certs, audit := w.certs, w.audit
	w.certs, w.audit = nil, nil
	w.mu.Unlock()
	for _, r := range certs {
		r.done <- fmt.Errorf("record certificate %s: shut down before commit: %w", r.rec.Serial, errWriterClosed)
	}
	w.failed.Add(uint64(len(certs)))
	w.auditDrops.Add(uint64(len(audit)))
	if len(certs)+len(audit) > 0 {
		w.log.LogAttrs(commitCtx, slog.LevelWarn, "storage writer shut down with records queued",
			slog.Int("certificates", len(certs)), slog.Int("audit_events", len(audit)))
	}
}
