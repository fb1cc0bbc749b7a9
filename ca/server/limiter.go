package server

import (
	"context"
	"fmt"
	"time"
)

// limiter bounds signing work in flight. A request that cannot get a slot
// within wait is refused with ErrOverloaded (ResourceExhausted), which
// clients retry with backoff, instead of queueing without bound.
type limiter struct {
	slots chan struct{}
	wait  time.Duration
	m     *Metrics
}

func newLimiter(n int, wait time.Duration, m *Metrics) *limiter {
	return &limiter{slots: make(chan struct{}, n), wait: wait, m: m}
}

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
