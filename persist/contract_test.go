package persist_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist"
)

// *DB is an engine.Log.
var _ engine.Log = (*persist.DB)(nil)

// openDB opens a log at path and closes it when the test ends.
func openDB(t testing.TB, path string, opts persist.Options) *persist.DB {
	t.Helper()
	db, err := persist.Open(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newDB(t testing.TB) *persist.DB {
	return openDB(t, filepath.Join(t.TempDir(), "flowd.db"), persist.Options{})
}

func TestContract(t *testing.T) {
	logtest.Run(t,
		func(t *testing.T) engine.Log { return newDB(t) },
		logtest.WithReopen(func(t *testing.T, l engine.Log) engine.Log {
			db := l.(*persist.DB)
			require.NoError(t, db.Close())
			return openDB(t, db.Path(), persist.Options{})
		}),
		logtest.WithFaults(logtest.Faults{
			// What bbolt's commit returns when the disk is full.
			Full: func(t *testing.T, l engine.Log) func() {
				db := l.(*persist.DB)
				persist.SetWriteFault(db, &os.PathError{Op: "write", Path: db.Path(), Err: syscall.ENOSPC})
				return func() { persist.SetWriteFault(db, nil) }
			},
			// A local file has no unreachable state; Failures/ClosedIsUnavailable
			// covers the closed database.
		}),
	)
}
