package clocktest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClock(t *testing.T) {
	c := New(time.Time{})
	require.Equal(t, T0, c.Now())
	waiting := c.Waiters()
	late, soon := c.After(time.Minute), c.After(time.Second)
	<-waiting
	require.Equal(t, 2, c.Pending())
	d, ok := c.Next()
	require.True(t, ok)
	require.Equal(t, time.Second, d)

	c.Jump(time.Hour) // a suspend: the wall clock moves, timers do not fire
	require.Equal(t, T0.Add(time.Hour), c.Now())
	require.Len(t, soon, 0)

	c.Advance(time.Second)
	require.Equal(t, T0.Add(time.Hour+time.Second), <-soon)
	require.Len(t, late, 0)
	c.Advance(time.Minute)
	require.Len(t, late, 1)
	require.Zero(t, c.Pending())
	require.Len(t, c.After(0), 1)
}
