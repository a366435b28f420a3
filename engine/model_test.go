package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// The model-based test: random sequences of operations run against the
// engine and against a plain model of what every flow's state and reason
// must be, checked after every step. Restarts (with or without time passing
// while down) and crashes mid-exchange are operations like any other.

// store is one run's log and how to restart on it.
type store struct {
	log engine.Log
	// reopen closes the log and opens the same storage again, as a
	// restart of the process would.
	reopen func() engine.Log
	close  func()
}

// backend makes a fresh store for each run.
type backend struct {
	name string
	open func(t testingT) *store
}

func backends(t *testing.T) []backend {
	dir := t.TempDir()
	n := 0
	return []backend{
		{name: "memlog", open: func(testingT) *store {
			l := memlog.New()
			return &store{log: l, reopen: func() engine.Log { return l }, close: func() {}}
		}},
		{name: "bbolt", open: func(t testingT) *store {
			n++
			path := filepath.Join(dir, fmt.Sprintf("run%d", n), "flowd.db")
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
			// Durability is not what the model checks: skip fsync so a few
			// hundred runs stay quick. Close and reopen are real.
			opts := persist.Options{NoSync: true}
			db, err := persist.Open(path, opts)
			require.NoError(t, err)
			s := &store{log: db}
			s.reopen = func() engine.Log {
				require.NoError(t, db.Close())
				db, err = persist.Open(path, opts)
				require.NoError(t, err)
				s.log = db
				return db
			}
			s.close = func() {
				_ = db.Close()
				_ = os.RemoveAll(filepath.Dir(path))
			}
			return s
		}},
	}
}

type opKind string

const (
	opStart     opKind = "start"
	opGood      opKind = "callback"
	opDenied    opKind = "callback_denied"
	opBadCode   opKind = "callback_bad_code"
	opEmpty     opKind = "callback_empty"
	opUnknown   opKind = "callback_unknown_state"
	opCancel    opKind = "cancel"
	opStep      opKind = "clock_step"
	opRestart   opKind = "restart"
	opDown      opKind = "restart_after_downtime"
	opCrash     opKind = "crash_mid_exchange"
	opDuplicate opKind = "duplicate_callback"
)

// op is one step. Its numbers pick a flow, provider, account, TTL or
// duration; they are taken modulo what exists when the step runs.
type op struct {
	Kind opKind
	N    int
}

func (o op) String() string { return fmt.Sprintf("%s(%d)", o.Kind, o.N) }

var (
	modelProviders = []string{"gh", "gl"}
	modelAccounts  = []string{"", "alice"}
	modelTTLs      = []time.Duration{0, 30 * time.Second, 2 * time.Minute}
	modelSteps     = []time.Duration{time.Second, 29 * time.Second, time.Minute, 2 * time.Minute, engine.DefaultTTL}
)

func opGen(kinds ...opKind) *rapid.Generator[op] {
	return rapid.Custom(func(t *rapid.T) op {
		return op{Kind: rapid.SampledFrom(kinds).Draw(t, "kind"), N: rapid.IntRange(0, 1<<16).Draw(t, "n")}
	})
}

// mflow is the model of one flow.
type mflow struct {
	id, authURL, code string
	provider, account string
	deadline          time.Time
	state             states.State
	reason            states.Reason
	supersededBy      int
	ignored           int
}

func (f *mflow) live() bool { return f.state.Live() }

// world is one run: an engine, its log, and the model.
type world struct {
	t     testingT
	ctx   context.Context
	clk   *fakeclock.Clock
	st    *store
	prov  *oauthtest.Server
	cfg   engine.Config
	e     *engine.Engine
	flows []*mflow
	// calls is how many token requests the model expects in this run;
	// base is the provider's count when the run began.
	calls, base int
	unknownN    int
}

func newWorld(t testingT, prov *oauthtest.Server, b backend) *world {
	w := &world{t: t, ctx: context.Background(), clk: fakeclock.New(epoch), st: b.open(t), prov: prov, base: prov.Calls()}
	w.cfg = engine.Config{Log: w.st.log, Clock: w.clk, ExchangeTimeout: 5 * time.Second,
		Providers: []engine.Provider{providerConfig(prov, "gh"), providerConfig(prov, "gl")}}
	w.open()
	return w
}

func (w *world) open() {
	w.t.Helper()
	w.cfg.Log = w.st.log
	e, err := engine.Open(w.ctx, w.cfg)
	require.NoError(w.t, err)
	w.e = e
}

func (w *world) close() {
	_ = w.e.Close()
	w.st.close()
}

// restart closes the engine, lets down pass with no engine running,
// calls meanwhile (with the log closed to the engine), and opens again.
func (w *world) restart(down time.Duration, meanwhile func()) {
	w.t.Helper()
	require.NoError(w.t, w.e.Close())
	if down > 0 {
		w.clk.Advance(down)
	}
	if meanwhile != nil {
		meanwhile()
	}
	w.st.reopen()
	w.open()
}

func (w *world) pick(n int) *mflow {
	if len(w.flows) == 0 {
		return nil
	}
	return w.flows[n%len(w.flows)]
}

// callback delivers p for f and checks the result against the model;
// outcome says what a live f becomes, exchange whether it reaches the
// token endpoint.
func (w *world) callback(f *mflow, p engine.CallbackParams, state states.State, reason states.Reason, exchange bool) {
	w.t.Helper()
	p.State = f.id
	got, err := w.e.Callback(w.ctx, p)
	if !f.live() {
		require.ErrorIs(w.t, err, engine.ErrNotAwaiting)
		f.ignored++
		return
	}
	require.NoError(w.t, err)
	f.state, f.reason = state, reason
	require.Equal(w.t, state, got.State)
	require.Equal(w.t, reason, got.Reason)
	if exchange {
		w.calls++
	}
}

func (w *world) do(o op) {
	w.t.Helper()
	f := w.pick(o.N)
	switch o.Kind {
	case opStart:
		prov, account := modelProviders[o.N%2], modelAccounts[(o.N/2)%2]
		ttl := modelTTLs[(o.N/4)%len(modelTTLs)]
		st, err := w.e.Start(w.ctx, engine.StartRequest{Provider: prov, Account: account, TTL: ttl})
		require.NoError(w.t, err)
		if ttl == 0 {
			ttl = engine.DefaultTTL
		}
		var superseded []string
		for _, g := range w.flows {
			if g.live() && g.provider == prov && g.account == account {
				g.state, g.reason, g.supersededBy = states.Error, states.Superseded, len(w.flows)
				superseded = append(superseded, g.id)
			}
		}
		require.ElementsMatch(w.t, superseded, st.Superseded)
		require.True(w.t, w.clk.Now().Add(ttl).Equal(st.Deadline))
		w.flows = append(w.flows, &mflow{id: st.ID, authURL: st.AuthURL, provider: prov, account: account,
			deadline: st.Deadline, state: states.AwaitingCallback, supersededBy: -1})
	case opGood, opDuplicate:
		if f == nil {
			return
		}
		if f.code == "" {
			_, f.code = w.prov.Authorize(w.t, f.authURL)
		}
		w.callback(f, engine.CallbackParams{Code: f.code}, states.Complete, states.Exchanged, true)
		if o.Kind == opDuplicate {
			w.callback(f, engine.CallbackParams{Code: f.code}, "", "", false)
		}
	case opDenied:
		if f != nil {
			w.callback(f, engine.CallbackParams{Error: "access_denied", ErrorDescription: "The user said no."}, states.Error, states.ProviderDenied, false)
		}
	case opBadCode:
		if f != nil {
			w.callback(f, engine.CallbackParams{Code: codePrefix + "forged"}, states.Error, states.ExchangeFailed, true)
		}
	case opEmpty:
		if f != nil {
			w.callback(f, engine.CallbackParams{}, states.Error, states.InvalidCallback, false)
		}
	case opUnknown:
		before := dump(w.t, w.st.log)
		w.unknownN++
		_, err := w.e.Callback(w.ctx, engine.CallbackParams{State: fmt.Sprintf("unknown-%d-%d", o.N, w.unknownN), Code: "x"})
		require.ErrorIs(w.t, err, engine.ErrUnknownState)
		require.Equal(w.t, before, dump(w.t, w.st.log), "an unknown state changes no flow")
	case opCancel:
		if f == nil {
			return
		}
		got, err := w.e.Cancel(w.ctx, f.id)
		if !f.live() {
			require.ErrorIs(w.t, err, engine.ErrNotAwaiting)
			return
		}
		require.NoError(w.t, err)
		require.Equal(w.t, states.Canceled, got.Reason)
		f.state, f.reason = states.Error, states.Canceled
	case opStep:
		w.clk.Advance(modelSteps[o.N%len(modelSteps)])
		w.expire(states.DeadlineExpired)
	case opRestart:
		w.restart(0, nil)
	case opDown:
		w.restart(modelSteps[o.N%len(modelSteps)], nil)
		w.expire(states.ExpiredWhileDown)
	case opCrash:
		if f == nil || !f.live() {
			w.restart(0, nil)
			return
		}
		// The engine died after recording exchange_started and before the
		// token endpoint answered.
		w.restart(0, func() {
			hist, err := w.st.log.History(w.ctx, f.id)
			require.NoError(w.t, err)
			require.NoError(w.t, w.st.log.Append(w.ctx, []states.Record{{
				Version: states.SchemaVersion, Flow: f.id, FlowSeq: hist[len(hist)-1].FlowSeq + 1,
				Event: states.ExchangeStarted, From: states.AwaitingCallback, To: states.AwaitingCallback, Time: w.clk.Now(),
			}}, nil))
		})
		f.state, f.reason = states.Error, states.ExchangeInterrupted
	default:
		w.t.Errorf("unknown op %s", o)
		w.t.FailNow()
	}
}

// expire ends, in the model, every live flow whose deadline has come.
func (w *world) expire(reason states.Reason) {
	now := w.clk.Now()
	for _, f := range w.flows {
		if f.live() && !now.Before(f.deadline) {
			f.state, f.reason = states.Expired, reason
		}
	}
}

// check compares every flow with the model, and with a replay of its own
// history.
func (w *world) check() {
	w.t.Helper()
	live := 0
	for i, f := range w.flows {
		got, err := w.e.Status(w.ctx, f.id)
		require.NoError(w.t, err)
		require.Equal(w.t, f.state, got.State, "flow %d", i)
		require.Equal(w.t, f.reason, got.Reason, "flow %d", i)
		require.Equal(w.t, f.ignored, got.IgnoredCallbacks, "flow %d", i)
		require.False(w.t, got.Exchanging, "flow %d", i)
		if f.supersededBy >= 0 {
			require.Equal(w.t, w.flows[f.supersededBy].id, got.SupersededBy, "flow %d", i)
		}
		hist, err := w.e.History(w.ctx, f.id)
		require.NoError(w.t, err)
		folded, err := states.Fold(hist)
		require.NoError(w.t, err, "flow %d's history replays legally", i)
		require.Equal(w.t, folded, got, "flow %d: the engine's view is its history's fold", i)
		if f.live() {
			live++
		}
	}
	require.Equal(w.t, live, w.e.Stats().Live)
	require.Equal(w.t, w.calls, w.prov.Calls()-w.base, "token endpoint calls: one per code that reached it")
}

// outcome is what a run leaves behind, with flows named by their index
// (state tokens are random), for comparing two runs of the same ops.
type outcome struct {
	Flows []flowOutcome
	Calls int
}

type flowOutcome struct {
	State        states.State
	Reason       states.Reason
	Ignored      int
	SupersededBy int
	Events       []states.Event
}

func (w *world) outcome() outcome {
	w.t.Helper()
	out := outcome{Calls: w.calls}
	for _, f := range w.flows {
		hist, err := w.e.History(w.ctx, f.id)
		require.NoError(w.t, err)
		var evs []states.Event
		for _, r := range hist {
			evs = append(evs, r.Event)
		}
		out.Flows = append(out.Flows, flowOutcome{State: f.state, Reason: f.reason, Ignored: f.ignored, SupersededBy: f.supersededBy, Events: evs})
	}
	return out
}

var allOps = []opKind{opStart, opStart, opStart, opGood, opDuplicate, opDenied, opBadCode, opEmpty, opUnknown,
	opCancel, opStep, opStep, opRestart, opDown, opCrash}

func TestModel(t *testing.T) {
	prov := oauthtest.New(t, oauthtest.Options{})
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				ops := rapid.SliceOfN(opGen(allOps...), 1, 40).Draw(rt, "ops")
				w := newWorld(rt, prov, b)
				defer w.close()
				for _, o := range ops {
					w.do(o)
					w.check()
				}
				checkReplay(rt, w.st.log)
			})
		})
	}
}

// Restart between any two steps gives the same states and outcome as an
// uninterrupted run: the same ops, once straight through and once with a
// restart after each step rapid picks, leave the same flows with the same
// histories.
func TestRestartIsInvisible(t *testing.T) {
	prov := oauthtest.New(t, oauthtest.Options{})
	kinds := slices.DeleteFunc(slices.Clone(allOps), func(k opKind) bool { return k == opRestart || k == opDown || k == opCrash })
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				ops := rapid.SliceOfN(opGen(kinds...), 1, 30).Draw(rt, "ops")
				restartAfter := rapid.SliceOfN(rapid.Bool(), len(ops), len(ops)).Draw(rt, "restart_after")

				straight := newWorld(rt, prov, b)
				defer straight.close()
				for _, o := range ops {
					straight.do(o)
				}
				straight.check()

				restarted := newWorld(rt, prov, b)
				defer restarted.close()
				for i, o := range ops {
					restarted.do(o)
					if restartAfter[i] {
						restarted.restart(0, nil)
					}
				}
				restarted.check()
				require.Equal(rt, straight.outcome(), restarted.outcome())
			})
		})
	}
}
