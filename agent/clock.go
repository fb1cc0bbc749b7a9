package agent

import "time"

// wallCheck bounds every wait of the manager and the agent-SVID loop. Go's
// timers count monotonic time, which stops while the machine is suspended;
// deadlines are wall-clock times (see wallNow), so re-checking them at
// least this often renews at once after a suspend longer than an SVID's
// remaining life, instead of after the monotonic time that was left.
const wallCheck = time.Second

// wallNow is the default Clock: the wall clock without its monotonic
// reading, so that comparisons between deadlines and now follow the wall
// clock across a suspend.
func wallNow() time.Time { return time.Now().Round(0) }
