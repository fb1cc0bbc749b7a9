// Package backoff computes retry delays shared by the CA and the agent.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Exponential is exponential backoff with jitter in [d/2, d], where d
// doubles from base with each failure up to limit.
func Exponential(failures int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
