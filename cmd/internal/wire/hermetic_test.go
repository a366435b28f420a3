package wire

import (
	"os"
	"testing"

	"github.com/flowdhq/flowd/internal/hermetic"
)

// TestMain keeps the tests away from the user's flowd config, state,
// socket and FLOWD_* settings (see internal/hermetic).
func TestMain(m *testing.M) { os.Exit(hermetic.Run(m)) }
