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

// requireLiveHeadsMirrorDisk checks the live heads in memory are exactly
// the live index and the heads it names.
func requireLiveHeadsMirrorDisk(t *testing.T, db *DB, when string) {
	t.Helper()
	want := map[string]liveHead{}
	require.NoError(t, db.view(func(tx *bolt.Tx) error {
		b := buckets(tx)
		return b.live.ForEach(func(num, flow []byte) error {
			h, err := decodeHead(decodeSeq(num), b.heads.Get(num))
			want[string(flow)] = liveHead{num: decodeSeq(num), h: h}
			return err
		})
	}))
	assert.Equal(t, want, db.live.heads, when)
}

// Appends to live flows read their heads from memory; that memory follows
// the live index through every kind of append, refused ones and rolled-back
// commits included, and is rebuilt at open.
func TestLiveHeadsFollowTheLiveIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flowd.db")
	db, err := Open(path, Options{NoSync: true})
	require.NoError(t, err)

	a, b, c := logtest.NewFlow(logtest.Base), logtest.NewFlow(logtest.Base), logtest.NewFlow(logtest.Base)
	require.NoError(t, db.Append(ctx, []states.Record{a.Created(), a.URLIssued()}, nil))
	require.NoError(t, db.Append(ctx, []states.Record{b.Created(), b.Expired()}, nil)) // ends at once
	require.NoError(t, db.Append(ctx, []states.Record{c.Created()}, nil))
	requireLiveHeadsMirrorDisk(t, db, "after creating")

	stale := states.Record{Flow: c.ID, FlowSeq: 5, Event: states.URLIssued, From: states.Pending, To: states.AwaitingCallback, Time: logtest.Base}
	require.ErrorIs(t, db.Append(ctx, []states.Record{stale}, nil), engine.ErrConflict)
	require.Error(t, db.commits.do(func(tx *bolt.Tx) error {
		// A commit that rolls back after an append advanced a live flow.
		_ = buckets(tx)
		db.live.set(a.ID, 1, head{seqs: []uint64{1, 2, 99}}, true)
		return assert.AnError
	}))
	requireLiveHeadsMirrorDisk(t, db, "after a refused append and a rollback")

	require.NoError(t, db.Append(ctx, []states.Record{a.ExchangeStarted()}, nil))
	require.NoError(t, db.Append(ctx, []states.Record{c.Failed(states.Canceled)}, nil))
	// A record that makes a finished flow live again (the machine has
	// none, the log allows it).
	revive := states.Record{Flow: b.ID, FlowSeq: 3, Event: states.Created, From: states.Expired, To: states.Pending, Time: logtest.Base}
	require.NoError(t, db.Append(ctx, []states.Record{revive}, nil))
	requireLiveHeadsMirrorDisk(t, db, "after ending and reviving")
	assert.Contains(t, db.live.heads, b.ID)
	assert.NotContains(t, db.live.heads, c.ID)

	require.NoError(t, db.Close())
	db, err = Open(path, Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	requireLiveHeadsMirrorDisk(t, db, "after reopening")
	require.NoError(t, db.Append(ctx, []states.Record{a.Succeeded()}, nil))
	requireLiveHeadsMirrorDisk(t, db, "after an append following the reopen")
	h, err := db.History(ctx, a.ID)
	require.NoError(t, err)
	assert.Len(t, h, 4)
	n, err := db.Prune(ctx, logtest.Base.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 2, n, "a and c are pruned; b, live again, is not")
	requireLiveHeadsMirrorDisk(t, db, "after pruning")
}
