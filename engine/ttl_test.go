package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/states"
)

// noPruner turns retention off so the only timer an engine arms is its
// deadline timer, and the fake clock's pending count shows it alone.
func noPruner(c *engine.Config) { c.Retention = -1 }

func TestExpiryOnTimeWithoutPolling(t *testing.T) {
	h := newHarness(t, noPruner, func(c *engine.Config) { c.TTL = 2 * time.Minute })
	st := h.start("")
	assert.Equal(t, 2*time.Minute, st.Deadline.Sub(epoch))
	h.clk.Advance(2*time.Minute - time.Nanosecond)
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State)
	h.clk.Advance(time.Nanosecond)
	// Nobody called Status, Wait or List between the step and this line:
	// the timer alone ended the flow.
	f := h.status(st.ID)
	assert.Equal(t, states.Expired, f.State)
	assert.Equal(t, states.DeadlineExpired, f.Reason)
	assert.Equal(t, st.Deadline, f.Ended)
	assert.Zero(t, h.e.Stats().Live)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.DeadlinePassed}, h.events(st.ID))

	_, code := h.prov.Authorize(t, st.AuthURL)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, h.prov.Calls())
}

func TestPerFlowTTL(t *testing.T) {
	h := newHarness(t, noPruner)
	short, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "a", TTL: 30 * time.Second})
	require.NoError(t, err)
	long := h.start("b")
	h.clk.Advance(30 * time.Second)
	assert.Equal(t, states.Expired, h.status(short.ID).State)
	assert.Equal(t, states.AwaitingCallback, h.status(long.ID).State)
	h.clk.Advance(engine.DefaultTTL)
	assert.Equal(t, states.Expired, h.status(long.ID).State)
	assert.Equal(t, int64(2), h.e.Stats().TimerWakeups)
}

// One timer serves every flow: flows sharing a deadline cost one wake-up,
// and an engine with nothing due does not wake at all.
func TestOneTimerForAllFlows(t *testing.T) {
	h := newHarness(t, noPruner)
	assert.Zero(t, h.clk.Pending(), "no timer while there is no flow")
	const n = 100
	ids := make([]string, n)
	for i := range n {
		ids[i] = h.start(string(rune('a'+i%26)) + string(rune('0'+i/26))).ID
	}
	assert.Equal(t, 1, h.clk.Pending(), "one timer for %d flows", n)
	assert.Equal(t, n, h.e.Stats().Live)

	h.clk.Advance(engine.DefaultTTL - time.Second)
	assert.Zero(t, h.e.Stats().TimerWakeups, "no wake-up before the deadline")
	h.clk.Advance(time.Second)
	assert.Equal(t, int64(1), h.e.Stats().TimerWakeups, "%d flows sharing one deadline: one wake-up", n)
	for _, id := range ids {
		assert.Equal(t, states.Expired, h.status(id).State)
	}
	assert.Zero(t, h.e.Stats().Live)
	assert.Zero(t, h.clk.Pending(), "idle: nothing armed")
	h.clk.Advance(24 * time.Hour)
	assert.Equal(t, int64(1), h.e.Stats().TimerWakeups, "no wake-up while idle")
}

// Staggered deadlines: one wake-up per distinct deadline, in order.
func TestWakeupsOnlyAtDeadlines(t *testing.T) {
	h := newHarness(t, noPruner)
	a := h.start("a")
	h.clk.Advance(time.Minute)
	b := h.start("b")
	c := h.start("c") // shares b's deadline
	h.clk.Advance(4 * time.Minute)
	assert.Equal(t, states.Expired, h.status(a.ID).State)
	assert.Equal(t, states.AwaitingCallback, h.status(b.ID).State)
	assert.Equal(t, int64(1), h.e.Stats().TimerWakeups)
	h.clk.Advance(time.Minute)
	assert.Equal(t, states.Expired, h.status(b.ID).State)
	assert.Equal(t, states.Expired, h.status(c.ID).State)
	assert.Equal(t, int64(2), h.e.Stats().TimerWakeups)
}

// A flow that finishes early takes its deadline with it: no wake-up at a
// deadline nobody needs any more.
func TestFinishedFlowsDoNotWakeTheTimer(t *testing.T) {
	h := newHarness(t, noPruner)
	done := h.connect("a")
	canceled := h.start("b")
	_, err := h.e.Cancel(h.ctx, canceled.ID)
	require.NoError(t, err)
	denied := h.start("c")
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: denied.ID, Error: "access_denied"})
	require.NoError(t, err)
	old := h.start("d")
	h.clk.Advance(time.Minute)
	live := h.start("d") // supersedes old; the only live flow, due a minute after the others
	assert.Equal(t, states.Superseded, h.status(old.ID).Reason)

	assert.Equal(t, 1, h.clk.Pending(), "one timer")
	h.clk.Advance(engine.DefaultTTL - time.Minute)
	assert.Zero(t, h.e.Stats().TimerWakeups, "the finished flows' deadlines wake nobody")
	h.clk.Advance(time.Minute)
	assert.Equal(t, states.Expired, h.status(live.ID).State)
	assert.Equal(t, int64(1), h.e.Stats().TimerWakeups, "one wake-up, for the one live flow")
	assert.Equal(t, states.Complete, h.status(done.ID).State)
	assert.Zero(t, h.clk.Pending())
	h.clk.Advance(time.Hour)
	assert.Equal(t, int64(1), h.e.Stats().TimerWakeups)
}

// With every flow finished early, nothing stays armed.
func TestNoTimerOnceAllFlowsFinished(t *testing.T) {
	h := newHarness(t, noPruner)
	h.connect("a")
	st := h.start("b")
	_, err := h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Zero(t, h.clk.Pending(), "idle engine: no timer armed")
	h.clk.Advance(time.Hour)
	assert.Zero(t, h.e.Stats().TimerWakeups)
}

func TestExpiryWhileDown(t *testing.T) {
	h := newHarness(t, noPruner)
	overdue := h.start("a")
	h.clk.Advance(time.Minute)
	later := h.start("b") // deadline one minute after overdue's
	done := h.connect("c")

	require.NoError(t, h.e.Close())
	// While no engine runs, time passes beyond overdue's deadline only.
	h.clk.Advance(engine.DefaultTTL - 30*time.Second)
	assert.Zero(t, h.clk.Pending(), "a closed engine arms nothing")
	h.open()

	f := h.status(overdue.ID)
	assert.Equal(t, states.Expired, f.State)
	assert.Equal(t, states.ExpiredWhileDown, f.Reason)
	assert.Equal(t, h.clk.Now(), f.Ended, "expired at open, not back-dated")
	assert.Equal(t, states.AwaitingCallback, h.status(later.ID).State, "re-armed, not expired")
	assert.Equal(t, states.Complete, h.status(done.ID).State)
	assert.Equal(t, 1, h.e.Stats().Live)
	assert.Zero(t, h.e.Stats().TimerWakeups, "expiry at open needs no wake-up")

	// Reopening again does not expire it a second time.
	h.restart()
	h.restart()
	assert.Equal(t, 1, countEvents(t, h, overdue.ID, states.DeadlinePassed))

	// The re-armed flow expires on time, from its recorded deadline.
	h.clk.Advance(30*time.Second - time.Nanosecond)
	assert.Equal(t, states.AwaitingCallback, h.status(later.ID).State)
	h.clk.Advance(time.Nanosecond)
	f = h.status(later.ID)
	assert.Equal(t, states.Expired, f.State)
	assert.Equal(t, states.DeadlineExpired, f.Reason)
	assert.Equal(t, later.Deadline, f.Ended)
	checkReplay(t, h.log)
}

// A flow recovered at open keeps working: its callback completes it with
// the verifier sealed before the restart.
func TestCallbackAfterRestart(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	h.restart()
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.Equal(t, oauthtest.S256(h.prov.LastRequest().Verifier), queryOf(t, st.AuthURL).Get("code_challenge"))
}

// Supersede works on flows recovered from the log too.
func TestSupersedeAfterRestart(t *testing.T) {
	h := newHarness(t)
	a := h.start("alice")
	h.restart()
	b := h.start("alice")
	assert.Equal(t, []string{a.ID}, b.Superseded)
	assert.Equal(t, states.Superseded, h.status(a.ID).Reason)
}

// The crash-safe exchange: a flow whose history ends in exchange_started
// (the engine died while the token endpoint was being called) is ended
// error(exchange_interrupted) at open, and its code is never sent again.
func TestInterruptedExchangeAtOpen(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	require.NoError(t, h.e.Close())

	hist, err := h.log.History(h.ctx, st.ID)
	require.NoError(t, err)
	last := hist[len(hist)-1]
	require.NoError(t, h.log.Append(h.ctx, []states.Record{{
		Version: states.SchemaVersion, Flow: st.ID, FlowSeq: last.FlowSeq + 1, Event: states.ExchangeStarted,
		From: states.AwaitingCallback, To: states.AwaitingCallback, Time: h.clk.Now(),
		Data: states.Data{CodeFingerprint: "hmac:0123"},
	}}, nil))
	// Even past the deadline, the interrupted exchange is what happened.
	h.clk.Advance(engine.DefaultTTL + time.Minute)

	h.open()
	f := h.status(st.ID)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ExchangeInterrupted, f.Reason)
	assert.False(t, f.Exchanging)
	assert.NotEmpty(t, f.Message)
	assert.Zero(t, h.e.Stats().Live)

	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, h.prov.Calls(), "the code is never redeemed after the crash")
	h.restart()
	assert.Equal(t, 1, countEvents(t, h, st.ID, states.Failed))
	_, ok, err := h.log.Secret(h.ctx, "verifier/"+st.ID)
	require.NoError(t, err)
	assert.False(t, ok, "the verifier of an ended flow is deleted")
	checkReplay(t, h.log)
}

// The verifier lives in the sealed store only while the flow is live.
func TestVerifierDeletedWhenFlowEnds(t *testing.T) {
	h := newHarness(t)
	has := func(id string) bool {
		_, ok, err := h.log.Secret(h.ctx, "verifier/"+id)
		require.NoError(t, err)
		return ok
	}
	a := h.start("a")
	assert.True(t, has(a.ID))
	b := h.connect("b")
	assert.False(t, has(b.ID))
	_, err := h.e.Cancel(h.ctx, a.ID)
	require.NoError(t, err)
	assert.False(t, has(a.ID))
	c := h.start("c")
	h.clk.Advance(engine.DefaultTTL)
	assert.False(t, has(c.ID))
}

func TestRetentionPrunesFinishedFlows(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) { c.Retention = 2 * time.Hour })
	// Canceled, not connected: a connection that holds its token keeps its
	// flow (TestRetentionKeepsActiveConnections).
	started := h.start("a")
	done, err := h.e.Cancel(h.ctx, started.ID) // ends at epoch
	require.NoError(t, err)
	long, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "b", TTL: 90 * time.Minute})
	require.NoError(t, err)
	h.clk.Advance(3 * time.Hour) // the pruner runs hourly; at +3h it cuts at +1h
	_, err = h.e.Status(h.ctx, done.ID)
	assert.ErrorIs(t, err, engine.ErrUnknownState, "ended more than the retention ago: pruned")
	assert.Equal(t, states.Expired, h.status(long.ID).State, "ended within retention: kept")
	h.clk.Advance(time.Hour)
	_, err = h.e.Status(h.ctx, long.ID)
	assert.ErrorIs(t, err, engine.ErrUnknownState)
}

func countEvents(t *testing.T, h *harness, state string, ev states.Event) int {
	t.Helper()
	n := 0
	for _, e := range h.events(state) {
		if e == ev {
			n++
		}
	}
	return n
}
