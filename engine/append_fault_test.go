package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// errNoSpace stands for the storage refusing a write (ENOSPC, EIO).
var errNoSpace = errors.New("write flowd.db: no space left on device")

// outcomeFaultLog is a real log that refuses appends of records carrying
// one event while refuse is set. (faults_test.go covers the other
// appends; this file covers a flow left mid-exchange without a restart.)
type outcomeFaultLog struct {
	engine.Log
	mu     sync.Mutex
	refuse states.Event
}

func (l *outcomeFaultLog) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	l.mu.Lock()
	refuse := l.refuse
	l.mu.Unlock()
	for _, r := range recs {
		if refuse != "" && r.Event == refuse {
			return errNoSpace
		}
	}
	return l.Log.Append(ctx, recs, secrets)
}

func (l *outcomeFaultLog) set(ev states.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refuse = ev
}

// When the exchange's outcome cannot be recorded, the code is spent but
// the flow cannot say how it ended. Without a restart it must not stay
// mid-exchange for ever (cancel refused, waiters never woken, the deadline
// put off again and again): once the exchange is over and the deadline
// has passed, it ends as a restart would end it, error(exchange_interrupted),
// and the code is never redeemed again.
func TestExchangeOutcomeNotRecordedDoesNotStickTheFlow(t *testing.T) {
	for _, ev := range []states.Event{states.ExchangeSucceeded, states.Failed} {
		t.Run(string(ev), func(t *testing.T) {
			fl := &outcomeFaultLog{Log: memlog.New()}
			h := newHarness(t, func(c *engine.Config) { c.Log = fl })
			st := h.start("")
			_, code := h.prov.Authorize(t, st.AuthURL)
			if ev == states.Failed {
				code = "not-a-code-the-provider-issued"
			}
			fl.set(ev)
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			require.ErrorIs(t, err, errNoSpace, "the caller is told the outcome was not recorded")
			assert.NotContains(t, err.Error(), code)
			require.Equal(t, 1, h.prov.Calls())

			fl.set("")
			_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			require.Error(t, err, "a repeated callback changes nothing")
			assert.Equal(t, 1, h.prov.Calls(), "and redeems nothing")

			h.clk.Advance(engine.DefaultTTL + 2*h.cfg.ExchangeTimeout)
			require.Eventually(t, func() bool { return h.status(st.ID).State.Terminal() }, 10e9, 5e6,
				"the flow is still mid-exchange after its deadline and the exchange timeout, with no exchange running")
			f := h.status(st.ID)
			assert.Equal(t, states.Error, f.State)
			assert.Equal(t, states.ExchangeInterrupted, f.Reason)
			assert.Equal(t, 1, h.prov.Calls())
			checkReplay(t, fl)

			h.restart()
			assert.Equal(t, states.ExchangeInterrupted, h.status(st.ID).Reason, "a restart agrees")
		})
	}
}
