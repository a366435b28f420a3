package memlog_test

import (
	"fmt"
	"testing"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist/memlog"
)

var _ engine.Log = (*memlog.Log)(nil)

func TestContract(t *testing.T) {
	fail := func(err error) func(*testing.T, engine.Log) func() {
		return func(t *testing.T, l engine.Log) func() {
			l.(*memlog.Log).Fail(err)
			return func() { l.(*memlog.Log).Fail(nil) }
		}
	}
	logtest.Run(t, func(t *testing.T) engine.Log { return memlog.New() },
		logtest.WithFaults(logtest.Faults{
			Full:        fail(fmt.Errorf("the test's quota of 0 bytes: %w", engine.ErrStorageFull)),
			Unavailable: fail(fmt.Errorf("the test's backend is down: %w", engine.ErrLogUnavailable)),
		}))
}
