package memlog_test

import (
	"testing"

	"flowd.local/flowd/engine"
	"flowd.local/flowd/engine/logtest"
	"flowd.local/flowd/persist/memlog"
)

var _ engine.Log = (*memlog.Log)(nil)

func TestContract(t *testing.T) {
	logtest.Run(t, func(t *testing.T) engine.Log { return memlog.New() })
}
