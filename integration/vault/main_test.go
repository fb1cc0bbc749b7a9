//go:build vault

package vault

import (
	"testing"

	"github.com/lanyard-id/lanyard/integration/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
