package engine_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/flowdhq/flowd/internal/hermetic"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// engine promises that Close stops its timers and waits for its work.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(hermetic.Wrap(m))
}
