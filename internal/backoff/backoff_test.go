package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestExponential(t *testing.T) {
	base, limit := 500*time.Millisecond, time.Minute
	for _, tt := range []struct {
		failures int
		want     time.Duration // upper end; the lower end is half of it
	}{
		{0, base}, {1, base}, {2, time.Second}, {3, 2 * time.Second}, {7, 32 * time.Second}, {8, limit}, {100, limit},
	} {
		for range 200 {
			d := Exponential(tt.failures, base, limit)
			require.GreaterOrEqual(t, d, tt.want/2, "failures %d", tt.failures)
			require.LessOrEqual(t, d, tt.want, "failures %d", tt.failures)
		}
	}
}
