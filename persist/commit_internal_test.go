package persist

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/states"
)

// A failing function in a group commit gets its own error, and the others
// in the same commit still land.
func TestCommitterIsolatesFailures(t *testing.T) {
	bdb, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	require.NoError(t, err)
	defer bdb.Close()
	require.NoError(t, bdb.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }))
	c := &committer{db: bdb, maxBatch: 16}

	errBad := errors.New("bad append")
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.do(func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%02d", i), []byte("v")); err != nil {
					return err
				}
				switch i % 8 {
				case 3:
					return errBad // after writing: the write must not land
				case 5:
					panic("damaged page")
				}
				return nil
			})
		})
	}
	wg.Wait()

	require.NoError(t, bdb.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range n {
			got := b.Get(fmt.Appendf(nil, "k%02d", i))
			switch i % 8 {
			case 3:
				assert.ErrorIs(t, errs[i], errBad)
				assert.Nil(t, got, "a failed function's writes must not land")
			case 5:
				assert.ErrorIs(t, errs[i], ErrCorrupt, "a panic becomes an error")
				assert.Nil(t, got)
			default:
				assert.NoError(t, errs[i])
				assert.NotNil(t, got, "writer %d shared a commit with a failing one and must still land", i)
			}
		}
		return nil
	}))
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.False(t, c.leading, "the lead is released once the queue is empty")
	assert.Empty(t, c.queue)
}

// An append that queues while a commit runs its functions joins that
// commit instead of waiting for the next one.
func TestCommitterTakesAppendsQueuedDuringTheTransaction(t *testing.T) {
	bdb, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	require.NoError(t, err)
	defer bdb.Close()
	c := &committer{db: bdb, maxBatch: 16}

	var firstTx, secondTx int
	second := make(chan error)
	require.NoError(t, c.do(func(tx *bolt.Tx) error {
		firstTx = tx.ID()
		go func() {
			second <- c.do(func(tx *bolt.Tx) error { secondTx = tx.ID(); return nil })
		}()
		for {
			c.mu.Lock()
			queued := len(c.queue)
			c.mu.Unlock()
			if queued > 0 {
				return nil
			}
			runtime.Gosched()
		}
	}))
	require.NoError(t, <-second)
	assert.Equal(t, firstTx, secondTx, "the append queued during the first one's transaction shares its commit")
}

// Stats count the commits and the appends they carried; failed appends
// and the committer's own checkpoints are not counted.
func TestStatsCountCommitsAndAppends(t *testing.T) {
	withCheckpointEvery(t, 8)
	db, err := Open(filepath.Join(t.TempDir(), "flowd.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()

	const writers, each = 32, 4
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				f := logtest.NewFlow(logtest.Base)
				assert.NoError(t, db.Append(ctx, []states.Record{f.Created()}, nil))
			}
		})
	}
	wg.Wait()
	// A conflict is an outcome inside a committed transaction: counted.
	f := logtest.NewFlow(logtest.Base)
	require.NoError(t, db.Append(ctx, []states.Record{f.Created()}, nil))
	again := logtest.NewFlow(logtest.Base)
	again.ID = f.ID
	require.ErrorIs(t, db.Append(ctx, []states.Record{again.Created()}, nil), engine.ErrConflict)

	st := db.Stats()
	t.Logf("%d appends in %d commits", st.Appends, st.Commits)
	assert.Equal(t, uint64(writers*each+2), st.Appends)
	assert.GreaterOrEqual(t, st.Commits, uint64(1))
	assert.Less(t, st.Commits, st.Appends, "concurrent appends shared commits")
}
