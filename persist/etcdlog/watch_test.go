package etcdlog_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/states"
)

// collector gathers what a Watch delivers.
type collector struct {
	mu      sync.Mutex
	appends [][]states.Record
}

func (c *collector) fn(recs []states.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.appends = append(c.appends, recs)
}

func (c *collector) seqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, a := range c.appends {
		for _, r := range a {
			out = append(out, r.Seq)
		}
	}
	return out
}

func watch(t *testing.T, l *etcdlog.Log, after uint64) (*collector, func() error) {
	ctx, cancel := context.WithCancel(bg)
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- l.Watch(ctx, after, c.fn) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { _ = stop() })
	return c, stop
}

func TestWatchSeesOtherReplicasAppendsInOrder(t *testing.T) {
	c := single(t)
	prefix, key := freshPrefix(t), newKey(t)
	a, b := openLog(t, c, prefix, key), openLog(t, c, prefix, key)
	old := logtest.NewFlow(logtest.Base)
	require.NoError(t, b.Append(bg, []states.Record{old.Created()}, nil))

	head, err := a.Head(bg)
	require.NoError(t, err)
	got, stop := watch(t, a, head)

	var want []uint64
	f := logtest.NewFlow(logtest.Base)
	for _, recs := range [][]states.Record{{f.Created(), f.URLIssued()}, {old.Expired()}, {f.ExchangeStarted()}, {f.Succeeded()}} {
		require.NoError(t, b.Append(bg, recs, map[string][]byte{"s": []byte("x")}))
		for _, r := range recs {
			want = append(want, r.Seq)
		}
	}
	require.NoError(t, b.Append(bg, nil, map[string][]byte{"only": []byte("secret")}), "a secrets-only append delivers nothing")
	_, err = b.Prune(bg, logtest.Base.Add(time.Hour))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(got.seqs()) >= len(want) }, 10*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	assert.Equal(t, want, got.seqs(), "every append after head, with the Seq Append gave, once, in order; no deletes")
	got.mu.Lock()
	assert.Len(t, got.appends, 4, "one call per append")
	assert.Equal(t, f.ID, got.appends[0][0].Flow)
	got.mu.Unlock()

	// Watching from inside an append delivers only its later records.
	again, stop := watch(t, a, want[0])
	require.Eventually(t, func() bool { return len(again.seqs()) >= len(want)-1 }, 10*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	assert.Equal(t, want[1:], again.seqs())
}

func TestWatchAfterCompactionIsLost(t *testing.T) {
	c := single(t)
	l := openLog(t, c, freshPrefix(t), newKey(t))
	head, err := l.Head(bg)
	require.NoError(t, err)
	f := logtest.NewFlow(logtest.Base)
	recs := []states.Record{f.Created(), f.URLIssued()}
	require.NoError(t, l.Append(bg, recs, nil))
	require.NoError(t, l.Append(bg, []states.Record{f.Expired()}, nil))
	_, err = l.Client().Compact(bg, int64(recs[0].Seq/1000)+1)
	require.NoError(t, err)
	err = l.Watch(bg, head, func([]states.Record) {})
	require.ErrorIs(t, err, etcdlog.ErrWatchLost, "a watch that cannot resume says so, so the caller re-reads")
}
