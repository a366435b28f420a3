package engine_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// A token kept in the log's secrets lands with the record that says it was
// stored, in one append: a flow whose exchange_succeeded could not be
// recorded leaves no token behind, and a completed flow always has its
// token.
func TestTokenLandsWithItsOutcomeRecord(t *testing.T) {
	fl := &outcomeFaultLog{Log: memlog.New()}
	h := newHarness(t, func(c *engine.Config) { c.Log = fl })

	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	fl.set(states.ExchangeSucceeded)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, errNoSpace)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	assert.ErrorIs(t, err, engine.ErrNoToken, "no token without the record that says it was stored")

	fl.set("")
	f := h.connect("")
	require.Equal(t, states.Complete, f.State)
	require.True(t, f.TokenStored)
	_, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, f.ID, stored.Flow)
}
