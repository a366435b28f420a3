package daemon

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/flowdhq/flowd/internal/hermetic"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(hermetic.Wrap(m))
}

// Secrets the tests deal in; none may reach a log. goodCode is a code the
// fake providers accept (once).
const (
	goodCode     = "code-good-7f3a9c"
	clientSecret = "cs-secret-44cc55"
)
