package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// limiter bounds signing work in flight. A single request that cannot get
// a slot within wait is refused with ErrOverloaded (ResourceExhausted),
// which clients retry with backoff, instead of queueing without bound.
//
// A batch is admitted or refused as a whole before any work is done
// (admit): once admitted, its entries wait for slots for as long as the
// call lasts, so that accepted work is never thrown away half-way.
type limiter struct {
	slots     chan struct{}
	wait      time.Duration
	maxQueued int64
	queued    atomic.Int64 // batch entries admitted and not yet done
	m         *Metrics
}

func newLimiter(n int, wait time.Duration, maxQueued int, m *Metrics) *limiter {
	return &limiter{slots: make(chan struct{}, n), wait: wait, maxQueued: int64(maxQueued), m: m}
}

// acquire takes a slot for one request, waiting at most l.wait.
func (l *limiter) acquire(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
	default:
		t := time.NewTimer(l.wait)
		defer t.Stop()
		select {
		case l.slots <- struct{}{}:
		case <-t.C:
			return nil, fmt.Errorf("%w: %d signing operations in flight", ErrOverloaded, cap(l.slots))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l.m.InFlight.Inc()
	return func() { <-l.slots; l.m.InFlight.Dec() }, nil
}

// admit reserves room for a batch of n entries, or refuses the whole batch
// when the entries already queued would make it wait too long. done must be
// called once the batch is finished.
func (l *limiter) admit(n int) (done func(), err error) {
	if q := l.queued.Add(int64(n)); q > l.maxQueued && q != int64(n) {
		l.queued.Add(-int64(n))
		return nil, fmt.Errorf("%w: %d batch entries queued", ErrOverloaded, q-int64(n))
	}
	return func() { l.queued.Add(-int64(n)) }, nil
}

// acquireAdmitted takes a slot for an entry of an admitted batch, waiting
// as long as ctx allows.
func (l *limiter) acquireAdmitted(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	l.m.InFlight.Inc()
	return func() { <-l.slots; l.m.InFlight.Dec() }, nil
}
