package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// folded is what the whole log says the connections are: every record
// exported and folded, as a reader of the log would.
func folded(t *testing.T, h *harness) []string {
	t.Helper()
	flows := map[string]states.Flow{}
	require.NoError(t, h.e.Export(h.ctx, engine.ExportQuery{}, func(rec states.Record) error {
		f, err := flows[rec.Flow].Apply(rec)
		require.NoError(t, err)
		flows[rec.Flow] = f
		return nil
	}))
	var out []string
	for _, c := range states.Connections(flows) {
		out = append(out, c.Provider+"/"+c.Account+"@"+c.Flow)
	}
	return out
}

func listed(t *testing.T, h *harness) []string {
	t.Helper()
	cs, err := h.e.Connections(h.ctx)
	require.NoError(t, err)
	var out []string
	for _, c := range cs {
		out = append(out, c.Provider+"/"+c.Account+"@"+c.Flow)
	}
	return out
}

// Connections and Token without an account answer from the engine's index
// of connections instead of folding the log on every call. After any mix
// of connects (new accounts and reconnects), disconnects and restarts,
// they must say what the whole log says.
func TestConnectionIndexAgreesWithTheLog(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	rng := rand.New(rand.NewPCG(7, 11))
	accounts := []string{"octocat", "hubot", "mona"}
	for step := range 60 {
		acct := accounts[rng.IntN(len(accounts))]
		switch op := rng.IntN(10); {
		case op < 5:
			id.as(engine.Identity{Account: acct})
			h.connect("")
		case op < 8:
			_, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: acct})
			if err != nil {
				require.ErrorIs(t, err, engine.ErrNoToken, "step %d", step)
			}
		case op < 9:
			h.restart()
		default:
			// A Token call without an account resolves from the index.
			want := folded(t, h)
			_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			switch len(want) {
			case 0:
				require.ErrorIs(t, err, engine.ErrNoToken, "step %d", step)
			case 1:
				require.NoError(t, err, "step %d", step)
				assert.Contains(t, want[0], "@"+st.Flow, "step %d", step)
			default:
				require.ErrorIs(t, err, engine.ErrAccountRequired, "step %d", step)
			}
		}
		require.Equal(t, folded(t, h), listed(t, h), "step %d: Connections disagrees with the log", step)
	}
}

// Connects and disconnects that commit while the index is being built
// from the log are not lost: the changes are applied over the scan.
func TestConnectionIndexBuiltWhileConnecting(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	for i := range 20 {
		id.as(engine.Identity{Account: fmt.Sprintf("old-%d", i)})
		h.connect("")
	}
	for range 5 {
		h.restart() // the index is built again by the first call after
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 10 {
				id.as(engine.Identity{Account: fmt.Sprintf("new-%d", i)})
				h.connect("")
				_, _ = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: fmt.Sprintf("old-%d", i)})
			}
		})
		for range 10 {
			_, err := h.e.Connections(h.ctx)
			require.NoError(t, err)
		}
		wg.Wait()
		require.Equal(t, folded(t, h), listed(t, h))
	}
}

// pausingLog is memlog whose next Scan, once armed, reads the log, then
// waits for resume before it hands the records over: a scan that read the
// log before the appends that commit while it runs.
type pausingLog struct {
	*memlog.Log
	armed  atomic.Bool
	paused chan struct{}
	resume chan struct{}
}

func (l *pausingLog) Scan(ctx context.Context, after uint64, fn func(states.Record) error) error {
	if !l.armed.CompareAndSwap(true, false) {
		return l.Log.Scan(ctx, after, fn)
	}
	var recs []states.Record
	if err := l.Log.Scan(ctx, after, func(r states.Record) error { recs = append(recs, r); return nil }); err != nil {
		return err
	}
	l.paused <- struct{}{}
	<-l.resume
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// A connect and a disconnect that commit after the scan building the
// index read the log, and before it ends, are applied over its result.
func TestConnectionIndexKeepsChangesDuringItsScan(t *testing.T) {
	id := &identifier{}
	pl := &pausingLog{Log: memlog.New(), paused: make(chan struct{}), resume: make(chan struct{})}
	h := newHarness(t, withIdentify(id), func(c *engine.Config) { c.Log = pl; c.Retention = -1 })
	id.as(engine.Identity{Account: "octocat"})
	h.connect("")
	h.restart() // no index yet

	pl.armed.Store(true)
	first := make(chan []engine.Connection, 1)
	go func() {
		cs, err := h.e.Connections(h.ctx)
		assert.NoError(t, err)
		first <- cs
	}()
	<-pl.paused
	id.as(engine.Identity{Account: "hubot"})
	hubot := h.connect("")
	_, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: "octocat"})
	require.NoError(t, err)
	close(pl.resume)
	<-first

	assert.Equal(t, folded(t, h), listed(t, h), "the index has hubot and not octocat")
	_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err, "hubot is the one account")
	assert.Equal(t, hubot.ID, st.Flow)
}

// prunedLog is pausingLog that says when retention has pruned: retention
// rebuilds the index before it prunes.
type prunedLog struct {
	*pausingLog
	pruned chan struct{}
}

func (l *prunedLog) PruneKeeping(ctx context.Context, endedBefore time.Time, keep func(string) bool) (int, error) {
	defer func() { l.pruned <- struct{}{} }()
	return l.Log.PruneKeeping(ctx, endedBefore, keep)
}

// Retention rebuilds an index that is already built, from its own fold of
// the log. A connect that commits while that scan runs is applied to the
// index in use and must also be applied over the scan's result, or the
// installed index loses it.
func TestConnectionIndexRebuiltByRetentionKeepsChangesDuringItsScan(t *testing.T) {
	id := &identifier{}
	pl := &prunedLog{
		pausingLog: &pausingLog{Log: memlog.New(), paused: make(chan struct{}), resume: make(chan struct{})},
		pruned:     make(chan struct{}, 1),
	}
	h := newHarness(t, withIdentify(id), func(c *engine.Config) { c.Log = pl })
	<-pl.pruned // Open's retention pass
	id.as(engine.Identity{Account: "octocat"})
	h.connect("")
	require.Equal(t, folded(t, h), listed(t, h), "the index is built")

	pl.armed.Store(true)
	go h.clk.Advance(time.Hour) // the hourly retention pass
	<-pl.paused
	id.as(engine.Identity{Account: "hubot"})
	h.connect("")
	close(pl.resume)
	<-pl.pruned

	assert.Equal(t, []string{"hubot", "octocat"}, accountsOf(listed(t, h)), "hubot, connected during retention's scan, is listed")
	assert.Equal(t, folded(t, h), listed(t, h))
}

// accountsOf lists the accounts of listed's provider/account@flow lines,
// in the order of the lines.
func accountsOf(lines []string) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l[strings.Index(l, "/")+1:strings.Index(l, "@")])
	}
	return out
}
