package engine_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Everything at once: starts, callbacks (good, duplicate, denied),
// cancels, waits and clock steps from many goroutines. Whatever the
// interleaving, every history is legal, every code is redeemed at most
// once, every waiter is woken, and once time has run out nothing is left
// live or armed.
func TestConcurrentStress(t *testing.T) {
	h := newHarness(t, noPruner, func(c *engine.Config) { c.TTL = time.Minute })
	var (
		mu    sync.Mutex
		flows []engine.Started
		codes = map[string]string{}
	)
	pick := func(r *rand.Rand) (engine.Started, string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(flows) == 0 {
			return engine.Started{}, "", false
		}
		st := flows[r.IntN(len(flows))]
		return st, codes[st.ID], true
	}
	var wg, waiters sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 60 {
				switch r.IntN(6) {
				case 0, 1:
					st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: fmt.Sprintf("p%d", r.IntN(4))})
					require.NoError(t, err)
					_, code := h.prov.Authorize(t, st.AuthURL)
					mu.Lock()
					flows = append(flows, st)
					codes[st.ID] = code
					mu.Unlock()
					waiters.Go(func() {
						f, err := h.e.Wait(h.ctx, st.ID)
						assert.NoError(t, err)
						assert.True(t, f.State.Terminal())
					})
				case 2:
					if st, code, ok := pick(r); ok {
						_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
						if err != nil {
							assert.True(t, errorsIsAny(err, engine.ErrNotAwaiting, engine.ErrExpired), err)
						}
					}
				case 3:
					if st, _, ok := pick(r); ok {
						_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied"})
						if err != nil {
							assert.True(t, errorsIsAny(err, engine.ErrNotAwaiting, engine.ErrExpired), err)
						}
					}
				case 4:
					if st, _, ok := pick(r); ok {
						_, err := h.e.Cancel(h.ctx, st.ID)
						if err != nil {
							assert.True(t, errorsIsAny(err, engine.ErrNotAwaiting, engine.ErrExchangeInProgress), err)
						}
					}
				case 5:
					h.clk.Advance(time.Duration(r.IntN(20)) * time.Second)
				}
			}
		})
	}
	wg.Wait()
	h.clk.Advance(time.Hour)
	waiters.Wait()
	assert.Zero(t, h.e.Stats().Live)
	assert.Zero(t, h.clk.Pending(), "nothing armed once every flow has ended")

	all := checkReplay(t, h.log)
	exchanges := 0
	for _, st := range flows {
		hist, err := h.e.History(h.ctx, st.ID)
		require.NoError(t, err)
		started := 0
		for _, r := range hist {
			if r.Event == states.ExchangeStarted {
				started++
			}
		}
		assert.LessOrEqual(t, started, 1, "a code is redeemed at most once")
		exchanges += started
		assert.True(t, all[st.ID].State.Terminal())
	}
	assert.Equal(t, exchanges, h.prov.Calls())
	// Every superseded flow names a flow of the same owner.
	for _, f := range all {
		if f.Reason == states.Superseded {
			assert.Equal(t, f.Account, all[f.SupersededBy].Account)
		}
	}
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
