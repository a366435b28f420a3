package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

var errDiskFull = errors.New("disk full")

// faultyLog fails the appends fail picks, and passes the rest through.
type faultyLog struct {
	engine.Log
	mu   sync.Mutex
	fail func(recs []states.Record, secrets map[string][]byte) bool
}

func (l *faultyLog) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	l.mu.Lock()
	fail := l.fail != nil && l.fail(recs, secrets)
	l.mu.Unlock()
	if fail {
		return errDiskFull
	}
	return l.Log.Append(ctx, recs, secrets)
}

func (l *faultyLog) set(fail func([]states.Record, map[string][]byte) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = fail
}

func failEvent(ev states.Event) func([]states.Record, map[string][]byte) bool {
	return func(recs []states.Record, _ map[string][]byte) bool {
		return len(recs) > 0 && recs[len(recs)-1].Event == ev
	}
}

func withFaultyLog(fl *faultyLog) harnessOption {
	return func(c *engine.Config) { c.Log = fl }
}

func TestStartFailsCleanlyWhenTheLogFails(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl), noPruner)
	fl.set(failEvent(states.URLIssued))
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.ErrorIs(t, err, errDiskFull)
	assert.Zero(t, h.e.Stats().Live)
	assert.Zero(t, h.clk.Pending(), "nothing armed for a flow that was never recorded")
	assert.Empty(t, dump(t, fl))
}

// A transition that cannot be recorded does not happen: the caller gets
// the error and the flow is as it was.
func TestCancelAndDeniedFailCleanly(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl))
	st := h.start("")
	fl.set(failEvent(states.Failed))
	_, err := h.e.Cancel(h.ctx, st.ID)
	require.ErrorIs(t, err, errDiskFull)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied"})
	require.ErrorIs(t, err, errDiskFull)
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State)
	fl.set(nil)
	f, err := h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Canceled, f.Reason)
}

// If exchange_started cannot be recorded, the code is not sent: a crash
// could not be told from a redeemed code otherwise.
func TestNoExchangeWithoutExchangeStarted(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl))
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	fl.set(failEvent(states.ExchangeStarted))
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, errDiskFull)
	assert.Zero(t, h.prov.Calls())
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State)
	// The provider's redirect can be retried once the log is back.
	fl.set(nil)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// The outcome of an exchange that cannot be recorded is settled at the
// next open like a crash: exchange_interrupted, never a second exchange.
func TestExchangeOutcomeNotRecorded(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl))
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	fl.set(failEvent(states.ExchangeSucceeded))
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, errDiskFull)
	fl.set(nil)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting, "the code is spent")
	assert.Equal(t, 1, h.prov.Calls())
	h.restart()
	f := h.status(st.ID)
	assert.Equal(t, states.ExchangeInterrupted, f.Reason)
	assert.Equal(t, 1, h.prov.Calls())
	checkReplay(t, fl)
}

// An expiry that cannot be recorded is retried, and lands once the log is back.
func TestExpiryRetriedWhenTheLogFails(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl), noPruner)
	st := h.start("")
	fl.set(failEvent(states.DeadlinePassed))
	h.clk.Advance(engine.DefaultTTL)
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State)
	assert.Contains(t, h.logs.String(), "could not expire flow")
	fl.set(nil)
	h.clk.Advance(time.Second)
	f := h.status(st.ID)
	assert.Equal(t, states.Expired, f.State)
	assert.Zero(t, h.clk.Pending())
}

// Open that fails part-way through recovery leaves nothing running: no
// timer armed that would later write to a log the caller has given up on.
func TestOpenFailureLeavesNothingArmed(t *testing.T) {
	fl := &faultyLog{Log: memlog.New()}
	h := newHarness(t, withFaultyLog(fl), noPruner)
	h.start("a") // stays live, re-armed at open
	crashed := h.start("b")
	require.NoError(t, h.e.Close())
	hist, err := fl.History(h.ctx, crashed.ID)
	require.NoError(t, err)
	require.NoError(t, fl.Append(h.ctx, []states.Record{{Version: states.SchemaVersion, Flow: crashed.ID, FlowSeq: hist[len(hist)-1].FlowSeq + 1,
		Event: states.ExchangeStarted, From: states.AwaitingCallback, To: states.AwaitingCallback, Time: h.clk.Now()}}, nil))

	fl.set(failEvent(states.Failed))
	_, err = engine.Open(h.ctx, h.cfg)
	require.ErrorIs(t, err, errDiskFull)
	assert.Contains(t, err.Error(), "open")
	assert.Zero(t, h.clk.Pending(), "the failed engine armed nothing")

	fl.set(nil)
	h.open()
	assert.Equal(t, states.ExchangeInterrupted, h.status(crashed.ID).Reason)
	assert.Equal(t, 1, h.e.Stats().Live)
}

// A log that holds an illegal history refuses to open, naming the record.
func TestOpenRefusesIllegalHistory(t *testing.T) {
	l := memlog.New()
	require.NoError(t, l.Append(context.Background(), []states.Record{{Version: states.SchemaVersion, Flow: "f1", FlowSeq: 1,
		Event: states.URLIssued, From: states.Pending, To: states.AwaitingCallback, Time: epoch}}, nil))
	_, err := engine.Open(context.Background(), engine.Config{Log: l, Retention: -1})
	require.Error(t, err)
	var re *states.RecordError
	require.True(t, errors.As(err, &re))
	assert.Equal(t, "f1", re.Flow)
}

// Unknown-state spam (a public gateway) costs no log write and no record.
func TestOversizedStateIsUnknown(t *testing.T) {
	h := newHarness(t)
	before := dump(t, h.log)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: strings.Repeat("x", 1<<16), Code: "c"})
	require.ErrorIs(t, err, engine.ErrUnknownState)
	assert.Equal(t, before, dump(t, h.log))
}
