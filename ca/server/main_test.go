package server

import (
	"testing"

	"go.uber.org/goleak"
)

// The handlers start goroutines (batch entries, streams, the limiter's
// waiters): none may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
