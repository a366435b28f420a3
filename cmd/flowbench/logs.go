package main

import (
	"encoding/binary"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist"
)

// durableLog is an engine.Log on disk that the benchmark opens and closes.
type durableLog interface {
	engine.Log
	Close() error
	Stats() persist.Stats
}

var _ durableLog = (*persist.DB)(nil)

// openLog opens flowd's bbolt event log at path with the options flowd
// uses. bulk skips fsync and is used only to build the big databases of
// item 2, never for a figure that is measured.
func openLog(path string, bulk bool) (durableLog, error) {
	return persist.Open(path, persist.Options{NoSync: bulk})
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
