package persist_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist"
)

// A database file cut short (a full disk during a copy, a bad restore)
// maps pages past its end. Reading them raises SIGBUS, which kills the
// process with a Go fault trace unless Open turns it into an error that
// names the file and says what to do.
func TestTruncatedFileFailsOpenWithoutCrashing(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	for range 50 {
		f := logtest.NewFlow(logtest.Base)
		appendRecs(t, db, nil, f.Created(), f.URLIssued())
	}
	require.NoError(t, db.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	for _, size := range []int64{fi.Size() / 3, fi.Size() / 2, 3 * 4096} {
		require.NoError(t, os.Truncate(path, size))
		db, err := persist.Open(path, persist.Options{})
		if err == nil {
			// Nothing read beyond the end: reads must still not crash.
			_, _ = db.History(bg, "x")
			_ = db.Close()
			continue
		}
		assert.Contains(t, err.Error(), path, "size %d", size)
		assert.Contains(t, err.Error(), "move it aside", "size %d: says what to do", size)
	}
}
