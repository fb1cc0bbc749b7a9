// Package clocktest is the one fake clock of Lanyard's tests: the Now and
// After pair every component takes (Config.Clock, Config.After), driven by
// the test instead of by time.
//
// Advance moves time forward and fires the timers it passes. Jump moves
// only the wall clock, as a suspended machine or a clock step does: Go's
// timers count monotonic time, so they do not fire early. Waiters lets a
// test wait until the code under test is blocked in After before it moves
// the clock, so that no test needs to sleep.
package clocktest

import (
	"sort"
	"sync"
	"time"
)

// T0 is the default start: whole seconds, because X.509 times have second
// precision.
var T0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

// Clock is a settable clock safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time     // wall clock
	elapsed time.Duration // monotonic time since New
	timers  []timer
	waiting chan struct{} // closed and replaced whenever After is called
}

type timer struct {
	at time.Duration // on the monotonic scale
	ch chan time.Time
}

// New returns a clock at start (T0 when zero).
func New(start time.Time) *Clock {
	if start.IsZero() {
		start = T0
	}
	return &Clock{now: start, waiting: make(chan struct{})}
}

// Now is the wall clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After fires once d of monotonic time has passed on this clock; d ≤ 0
// fires at once.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.elapsed + d, ch: ch})
	close(c.waiting)
	c.waiting = make(chan struct{})
	return ch
}

// Advance moves the clock forward by d, firing every timer due by then in
// order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.elapsed += d
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at < c.timers[j].at })
	n := 0
	for _, t := range c.timers {
		if t.at <= c.elapsed {
			t.ch <- c.now
			continue
		}
		c.timers[n] = t
		n++
	}
	c.timers = c.timers[:n]
}

// Jump moves the wall clock by d without firing any timer, as a suspend
// of the machine does.
func (c *Clock) Jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Pending is the number of timers that have not fired.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next is how long until the earliest pending timer fires, and whether
// there is one.
func (c *Clock) Next() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	at := c.timers[0].at
	for _, t := range c.timers[1:] {
		at = min(at, t.at)
	}
	return at - c.elapsed, true
}

// Waiters returns a channel closed at the next call of After: a test
// blocks on it to know the code under test has started waiting.
func (c *Clock) Waiters() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting
}
