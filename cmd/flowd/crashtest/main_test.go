package crashtest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowdhq/flowd/internal/hermetic"
)

// TestMain removes the flowd binary built for the run, and fails the run
// if a test left a goroutine behind (a client, a fake provider, a
// process waiter).
func TestMain(m *testing.M) {
	code := hermetic.Run(m)
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
