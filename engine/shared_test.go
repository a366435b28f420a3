package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// sharedLog is a memlog that engines share as replicas share the etcd log:
// it implements engine.Watcher by polling Scan. Consecutive records of one
// flow are delivered as one append, which the engine must take either way.
type sharedLog struct {
	*memlog.Log
	// lose, when set, makes a running Watch return an error once per
	// value received: the engine must read the live flows again.
	lose chan struct{}
}

var _ engine.Watcher = sharedLog{}

var errLost = errors.New("sharedLog: watch lost its place")

func (l sharedLog) Head(ctx context.Context) (uint64, error) {
	var last uint64
	err := l.Scan(ctx, 0, func(r states.Record) error { last = r.Seq; return nil })
	return last, err
}

func (l sharedLog) Watch(ctx context.Context, after uint64, fn func([]states.Record)) error {
	for {
		var batch []states.Record
		flush := func() {
			if len(batch) > 0 {
				fn(batch)
				batch = nil
			}
		}
		err := l.Scan(ctx, after, func(r states.Record) error {
			if len(batch) > 0 && batch[0].Flow != r.Flow {
				flush()
			}
			batch = append(batch, r)
			after = r.Seq
			return nil
		})
		flush()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.lose:
			return errLost
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// replicas opens n engines on one shared log, one fake provider and one
// fake clock.
func replicas(t *testing.T, n int) (*harness, []*engine.Engine) {
	t.Helper()
	h := newHarness(t, func(c *engine.Config) { c.Log = sharedLog{Log: memlog.New()} })
	es := []*engine.Engine{h.e}
	for range n - 1 {
		e, err := engine.Open(h.ctx, h.cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.Close() })
		es = append(es, e)
	}
	return h, es
}

// holds waits until e holds n live flows.
func holds(t *testing.T, e *engine.Engine, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return e.Stats().Live == n }, 5*time.Second, time.Millisecond, "engine holds %d live flows", n)
}

func TestSharedCallbackOnAnotherEngine(t *testing.T) {
	h, es := replicas(t, 2)
	a, b := es[0], es[1]
	st, err := a.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	state, code := h.prov.Authorize(t, st.AuthURL)

	// b has not necessarily seen the flow yet: the callback loads it.
	f, err := b.Callback(h.ctx, engine.CallbackParams{State: state, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)

	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	f, err = a.Wait(ctx, state)
	require.NoError(t, err, "the engine that started the flow learns of its end")
	assert.Equal(t, states.Complete, f.State)
	holds(t, a, 0)
	holds(t, b, 0)
	_, _, err = b.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	checkReplay(t, h.log)
}

func TestSharedSameCallbackOnTwoEnginesExchangesOnce(t *testing.T) {
	h, es := replicas(t, 3)
	st, err := es[0].Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	holds(t, es[1], 1)
	holds(t, es[2], 1)
	state, code := h.prov.Authorize(t, st.AuthURL)

	var wg sync.WaitGroup
	errs := make([]error, len(es))
	flows := make([]states.Flow, len(es))
	for i, e := range es {
		wg.Go(func() { flows[i], errs[i] = e.Callback(h.ctx, engine.CallbackParams{State: state, Code: code}) })
	}
	wg.Wait()
	completed := 0
	for i, err := range errs {
		if err == nil {
			completed++
			assert.Equal(t, states.Complete, flows[i].State)
			continue
		}
		assert.ErrorIs(t, err, engine.ErrNotAwaiting, "engine %d", i)
	}
	assert.Equal(t, 1, completed, "one engine completes the flow")
	assert.Equal(t, 1, h.prov.Calls(), "the code is redeemed exactly once")
	checkReplay(t, h.log)
}

func TestSharedDeadlineEndsFlowOnce(t *testing.T) {
	h, es := replicas(t, 3)
	st, err := es[1].Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	for _, e := range es {
		holds(t, e, 1)
	}
	// Every engine armed the deadline; all fire at once.
	h.clk.Advance(engine.DefaultTTL)
	for _, e := range es {
		holds(t, e, 0)
	}
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.DeadlinePassed}, h.events(st.ID), "expired exactly once")
}

func TestSharedEngineGoneMidFlow(t *testing.T) {
	h, es := replicas(t, 2)
	a, b := es[0], es[1]
	st, err := a.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	holds(t, b, 1)
	require.NoError(t, a.Close())
	h.clk.Advance(engine.DefaultTTL)
	f, err := b.Status(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Expired, f.State, "the other engine expires the flow on time")
}

func TestSharedExchangeLostWithItsEngine(t *testing.T) {
	h, es := replicas(t, 2)
	st, err := es[0].Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	holds(t, es[1], 1)
	// A third engine recorded exchange_started and died before the outcome.
	hist, err := h.log.History(h.ctx, st.ID)
	require.NoError(t, err)
	rec := states.Record{Version: states.SchemaVersion, Flow: st.ID, FlowSeq: uint64(len(hist) + 1), Event: states.ExchangeStarted,
		From: states.AwaitingCallback, To: states.AwaitingCallback, Time: h.clk.Now().UTC()}
	require.NoError(t, h.log.Append(h.ctx, []states.Record{rec}, nil))
	for _, e := range es {
		require.Eventually(t, func() bool {
			f, err := e.Status(h.ctx, st.ID)
			return err == nil && f.Exchanging
		}, 5*time.Second, time.Millisecond)
	}

	// A restart meanwhile must not interrupt an exchange that may be running.
	late, err := engine.Open(h.ctx, h.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = late.Close() })
	f, err := late.Status(h.ctx, st.ID)
	require.NoError(t, err)
	assert.True(t, f.Exchanging, "an engine opening on a shared log leaves exchanges to the engine running them")

	h.clk.Advance(2*h.cfg.ExchangeTimeout - time.Second)
	f, err = es[1].Status(h.ctx, st.ID)
	require.NoError(t, err)
	assert.True(t, f.Exchanging, "the exchange is given its timeout and as long again to record its outcome")
	h.clk.Advance(time.Second)
	for _, e := range append(es, late) {
		holds(t, e, 0)
	}
	f, err = es[0].Status(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.ExchangeInterrupted, f.Reason)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.ExchangeStarted, states.Failed}, h.events(st.ID), "ended exactly once")
}

func TestSharedCancelOnAnotherEngine(t *testing.T) {
	h, es := replicas(t, 2)
	st, err := es[0].Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	f, err := es[1].Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Canceled, f.Reason)
	f, err = es[0].Wait(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Canceled, f.Reason)
}

func TestSharedWatchLostReadsLiveFlowsAgain(t *testing.T) {
	lose := make(chan struct{})
	h := newHarness(t, func(c *engine.Config) { c.Log = sharedLog{Log: memlog.New(), lose: lose} })
	other, err := engine.Open(h.ctx, engine.Config{Log: sharedLog{Log: h.cfg.Log.(sharedLog).Log}, Clock: h.clk, Providers: h.cfg.Providers, ExchangeTimeout: h.cfg.ExchangeTimeout})
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	ended, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "ended"})
	require.NoError(t, err)
	holds(t, other, 1)

	lose <- struct{}{} // h.e's watch stops; what happens now it misses
	state, code := h.prov.Authorize(t, ended.AuthURL)
	_, err = other.Callback(h.ctx, engine.CallbackParams{State: state, Code: code})
	require.NoError(t, err)
	started, err := other.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "started"})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	f, err := h.e.Wait(ctx, ended.ID)
	require.NoError(t, err, "the waiter is woken once the engine reads the log again")
	assert.Equal(t, states.Complete, f.State)
	holds(t, h.e, 1)
	f, err = h.e.Status(h.ctx, started.ID)
	require.NoError(t, err)
	assert.Equal(t, states.AwaitingCallback, f.State, "the flow started meanwhile is adopted")
}
