package engine_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Every operation in every state a flow can be in, through the engine's
// API: what it returns, where the flow ends up, and what is recorded.
func TestOperationsStateByState(t *testing.T) {
	type setup struct {
		// make returns the flow's state token and its code, and a func to
		// call after the operation (it finishes an exchange under way).
		make  func(h *harness) (state, code string, after func())
		state states.State
	}
	setups := map[string]setup{
		"awaiting_callback": {state: states.AwaitingCallback, make: func(h *harness) (string, string, func()) {
			st := h.start("")
			_, code := h.prov.Authorize(h.t, st.AuthURL)
			return st.ID, code, func() {}
		}},
		"exchanging": {state: states.AwaitingCallback, make: func(h *harness) (string, string, func()) {
			st, code, finish := h.exchanging()
			return st.ID, code, func() {
				_, err := finish()
				require.NoError(h.t, err)
			}
		}},
		"complete": {state: states.Complete, make: func(h *harness) (string, string, func()) {
			f := h.connect("")
			return f.ID, h.prov.LastRequest().Code, func() {}
		}},
		"error": {state: states.Error, make: func(h *harness) (string, string, func()) {
			st := h.start("")
			_, err := h.e.Cancel(h.ctx, st.ID)
			require.NoError(h.t, err)
			return st.ID, codePrefix + "x", func() {}
		}},
		"expired": {state: states.Expired, make: func(h *harness) (string, string, func()) {
			st := h.start("")
			h.clk.Advance(engine.DefaultTTL)
			return st.ID, codePrefix + "x", func() {}
		}},
	}
	type result struct {
		err    error
		state  states.State
		reason states.Reason
		// recorded is the event the operation appended, "" for none.
		recorded states.Event
	}
	ops := map[string]func(h *harness, state, code string) error{
		"callback with code": func(h *harness, state, code string) error {
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: state, Code: code})
			return err
		},
		"callback with error": func(h *harness, state, _ string) error {
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: state, Error: "access_denied"})
			return err
		},
		"callback with neither": func(h *harness, state, _ string) error {
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: state})
			return err
		},
		"cancel": func(h *harness, state, _ string) error {
			_, err := h.e.Cancel(h.ctx, state)
			return err
		},
		"deadline passes": func(h *harness, _, _ string) error {
			h.clk.Advance(engine.DefaultTTL)
			return nil
		},
	}
	finished := func(s states.State) map[string]result {
		return map[string]result{
			"callback with code":    {err: engine.ErrNotAwaiting, state: s, recorded: states.CallbackIgnored},
			"callback with error":   {err: engine.ErrNotAwaiting, state: s, recorded: states.CallbackIgnored},
			"callback with neither": {err: engine.ErrNotAwaiting, state: s, recorded: states.CallbackIgnored},
			"cancel":                {err: engine.ErrNotAwaiting, state: s},
			"deadline passes":       {state: s},
		}
	}
	want := map[string]map[string]result{
		"awaiting_callback": {
			"callback with code":    {state: states.Complete, reason: states.Exchanged, recorded: states.ExchangeSucceeded},
			"callback with error":   {state: states.Error, reason: states.ProviderDenied, recorded: states.Failed},
			"callback with neither": {state: states.Error, reason: states.InvalidCallback, recorded: states.Failed},
			"cancel":                {state: states.Error, reason: states.Canceled, recorded: states.Failed},
			"deadline passes":       {state: states.Expired, reason: states.DeadlineExpired, recorded: states.DeadlinePassed},
		},
		// Mid-exchange nothing but the exchange decides the flow.
		"exchanging": {
			"callback with code":    {err: engine.ErrNotAwaiting, state: states.AwaitingCallback, recorded: states.CallbackIgnored},
			"callback with error":   {err: engine.ErrNotAwaiting, state: states.AwaitingCallback, recorded: states.CallbackIgnored},
			"callback with neither": {err: engine.ErrNotAwaiting, state: states.AwaitingCallback, recorded: states.CallbackIgnored},
			"cancel":                {err: engine.ErrExchangeInProgress, state: states.AwaitingCallback},
			"deadline passes":       {state: states.AwaitingCallback},
		},
		"complete": finished(states.Complete),
		"error":    finished(states.Error),
		"expired":  finished(states.Expired),
	}
	for sname, s := range setups {
		for oname, op := range ops {
			t.Run(sname+"/"+oname, func(t *testing.T) {
				h := newHarness(t, noPruner)
				state, code, after := s.make(h)
				before := h.status(state)
				require.Equal(t, s.state, before.State)
				w := want[sname][oname]

				err := op(h, state, code)
				if w.err == nil {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, w.err)
				}
				f := h.status(state)
				assert.Equal(t, w.state, f.State)
				if w.reason != "" {
					assert.Equal(t, w.reason, f.Reason)
				} else {
					assert.Equal(t, before.Reason, f.Reason, "reason unchanged")
				}
				hist, err := h.e.History(h.ctx, state)
				require.NoError(t, err)
				if w.recorded == "" {
					assert.Equal(t, before.LastSeq, f.LastSeq, "nothing recorded")
				} else {
					assert.Equal(t, w.recorded, hist[len(hist)-1].Event)
				}
				after()
				if sname == "exchanging" {
					assert.Equal(t, states.Complete, h.status(state).State, "the exchange under way decides the flow")
				}
				wantCalls := 0
				switch {
				case sname == "exchanging" || sname == "complete":
					wantCalls = 1 // the code of the setup
				case sname == "awaiting_callback" && oname == "callback with code":
					wantCalls = 1
				}
				assert.Equal(t, wantCalls, h.prov.Calls(), "the token endpoint is called once per code, and only from awaiting_callback")
				checkReplay(t, h.log)
			})
		}
	}
}
