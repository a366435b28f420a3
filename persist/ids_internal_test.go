package persist

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/states"
)

func withCheckpointEvery(t *testing.T, n int) {
	old := ckptEvery
	ckptEvery = n
	t.Cleanup(func() { ckptEvery = old })
}

// crash drops the handle as a killed process would: no final checkpoint.
func crash(t *testing.T, db *DB) {
	t.Helper()
	require.NoError(t, db.bolt.Close())
}

// Flows are found by id whether their numbers were checkpointed to the ids
// bucket or are still in memory, across a clean close and across a crash,
// which leaves the recent ones to be found again among the records.
func TestFlowsFoundAcrossCheckpointsAndCrash(t *testing.T) {
	withCheckpointEvery(t, 10)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flowd.db")
	db, err := Open(path, Options{NoSync: true})
	require.NoError(t, err)

	var flows []*logtest.Flow
	want := map[string][]states.Record{}
	for i := range 55 {
		f := logtest.NewFlow(logtest.Base)
		flows = append(flows, f)
		recs := []states.Record{f.Created(), f.URLIssued()}
		require.NoError(t, db.Append(ctx, recs, nil))
		want[f.ID] = recs
		if i%3 == 0 { // some flows end, some stay live
			r := []states.Record{f.Failed(states.Canceled)}
			require.NoError(t, db.Append(ctx, r, nil))
			want[f.ID] = append(want[f.ID], r...)
		}
	}
	check := func(db *DB, when string) {
		t.Helper()
		for _, f := range flows {
			h, err := db.History(ctx, f.ID)
			require.NoError(t, err)
			assert.Equal(t, want[f.ID], h, "%s: history of flow %s", when, f.ID)
			dup := logtest.NewFlow(logtest.Base)
			dup.ID = f.ID
			err = db.Append(ctx, []states.Record{dup.Created()}, nil)
			assert.ErrorIs(t, err, engine.ErrConflict, "%s: flow %s must not start again", when, f.ID)
		}
	}
	db.ids.mu.RLock()
	inMemory, through := len(db.ids.recent), db.ids.through
	db.ids.mu.RUnlock()
	assert.Less(t, inMemory, 20, "checkpoints move numbers out of memory")
	assert.NotZero(t, through)
	check(db, "open")

	crash(t, db)
	db, err = Open(path, Options{NoSync: true})
	require.NoError(t, err)
	db.ids.mu.RLock()
	assert.Equal(t, inMemory, len(db.ids.recent), "after a crash the flows after the checkpoint are read back from the records")
	db.ids.mu.RUnlock()
	check(db, "after a crash")

	// Next records of the live flows, after the crash.
	for _, f := range flows {
		if h := want[f.ID]; !h[len(h)-1].To.Terminal() {
			r := []states.Record{f.ExchangeStarted()}
			require.NoError(t, db.Append(ctx, r, nil))
			want[f.ID] = append(want[f.ID], r...)
		}
	}
	require.NoError(t, db.Close())
	db, err = Open(path, Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	db.ids.mu.RLock()
	assert.Empty(t, db.ids.recent, "Close checkpoints every number")
	db.ids.mu.RUnlock()
	check(db, "after a clean close")
}

// A flow pruned before its number was checkpointed stays unknown.
func TestPrunedBeforeCheckpoint(t *testing.T) {
	withCheckpointEvery(t, 1000)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flowd.db")
	db, err := Open(path, Options{NoSync: true})
	require.NoError(t, err)
	f := logtest.NewFlow(logtest.Base)
	require.NoError(t, db.Append(ctx, []states.Record{f.Created(), f.Expired()}, nil))
	n, err := db.Prune(ctx, logtest.Base.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	h, err := db.History(ctx, f.ID)
	require.NoError(t, err)
	assert.Empty(t, h)
	require.NoError(t, db.Close())

	db, err = Open(path, Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	h, err = db.History(ctx, f.ID)
	require.NoError(t, err)
	assert.Empty(t, h)
	require.NoError(t, db.view(func(tx *bolt.Tx) error {
		assert.Zero(t, tx.Bucket(bucketIDs).Stats().KeyN, "the checkpoint leaves out pruned flows")
		return nil
	}))
	// The id can start a new flow.
	g := logtest.NewFlow(logtest.Base)
	g.ID = f.ID
	require.NoError(t, db.Append(ctx, []states.Record{g.Created()}, nil))
}

// The contract holds when every commit is followed by a checkpoint, so
// flows are found through the ids bucket rather than memory.
func TestContractCheckpointingEveryFlow(t *testing.T) {
	withCheckpointEvery(t, 1)
	open := func(t *testing.T, path string) *DB {
		db, err := Open(path, Options{NoSync: true})
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	logtest.Run(t,
		func(t *testing.T) engine.Log { return open(t, filepath.Join(t.TempDir(), "flowd.db")) },
		logtest.WithReopen(func(t *testing.T, l engine.Log) engine.Log {
			db := l.(*DB)
			crash(t, db) // no final checkpoint
			return open(t, db.Path())
		}),
	)
}

// A record reads back from its stored form exactly as it was encoded.
func TestStoredRecordReadsBack(t *testing.T) {
	f := logtest.NewFlow(logtest.Base)
	recs := append(f.Complete(), f.Ignored())
	g := logtest.NewFlow(logtest.Base)
	recs = append(recs, g.Created(), g.Failed(states.ProviderDenied))
	for _, r := range recs {
		r.Data.Message = `a message with ,"seq":0, inside`
		enc, err := encodeRecord(r)
		require.NoError(t, err)
		for _, seq := range []uint64{1, 9, 10, 12345, 1<<64 - 1} {
			r.Seq = seq
			want, err := r.Encode()
			require.NoError(t, err)
			num := seq // stored as its flow's first record, whatever its flow_seq
			if r.FlowSeq > 1 && seq > 5 {
				num = seq - 5
			}
			got, err := decodeRecord(encodeSeq(seq), enc.stored(seq, num), recordCheck{}, func(n uint64) (string, error) {
				assert.Equal(t, num, n)
				return r.Flow, nil
			})
			if num == seq && r.FlowSeq != 1 {
				assert.ErrorIs(t, err, ErrCorrupt, "a record stored as a first record says flow_seq %d", r.FlowSeq)
				continue
			}
			require.NoError(t, err)
			enc2, err := got.Encode()
			require.NoError(t, err)
			assert.Equal(t, string(want), string(enc2), "decoding the stored form gives the record back")
		}
	}
}

// A flow id is checked before its first append queues, and only in memory
// inside the transaction. A flow created with the same id in between, and
// moved out of memory by a checkpoint in between too, is still found: the
// second first append is a conflict, not a second flow under one id.
func TestNewFlowIDTakenBetweenCheckAndCommit(t *testing.T) {
	for _, ckpt := range []int{1, 1000} {
		t.Run(map[int]string{1: "checkpointed", 1000: "in memory"}[ckpt], func(t *testing.T) {
			withCheckpointEvery(t, ckpt)
			ctx := context.Background()
			db, err := Open(filepath.Join(t.TempDir(), "flowd.db"), Options{NoSync: true})
			require.NoError(t, err)
			defer db.Close()

			// Ended at once, so the live flows in memory do not know it.
			f := logtest.NewFlow(logtest.Base)
			first := []states.Record{f.Created(), f.Failed(states.Canceled)}
			raced := false
			afterNewFlowCheck = func() {
				if raced {
					return
				}
				raced = true
				require.NoError(t, db.Append(ctx, first, nil), "the racing append")
				if ckpt == 1 {
					// Another flow's append runs the checkpoint that
					// moves f's number out of memory.
					g := logtest.NewFlow(logtest.Base)
					require.NoError(t, db.Append(ctx, []states.Record{g.Created()}, nil))
					require.Zero(t, db.ids.lookup(f.ID), "f's number was checkpointed")
				}
			}
			t.Cleanup(func() { afterNewFlowCheck = nil })

			again := logtest.NewFlow(logtest.Base)
			again.ID = f.ID
			err = db.Append(ctx, []states.Record{again.Created()}, nil)
			require.True(t, raced)
			assert.ErrorIs(t, err, engine.ErrConflict)
			h, err := db.History(ctx, f.ID)
			require.NoError(t, err)
			assert.Equal(t, first, h, "the flow is the one the first append created")
		})
	}
}
