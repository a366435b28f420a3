package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/states"
)

// Issue 15: two replicas on one etcd cluster, 64 concurrent Token calls
// on an expired token with a rotating refresh token: exactly one refresh
// request reaches the token endpoint (a second would spend the refresh
// token twice, and the loser's provider answer is invalid_grant), every
// caller gets the winner's token, and the refresh is recorded once.
func TestRefreshSingleFlightAcrossReplicasOnEtcd(t *testing.T) {
	r := newRig(t, 3)
	clk := fakeclock.New(time.Now().UTC().Truncate(time.Second))
	r.cfg.Clock = clk
	a, b := r.replica(), r.replica()
	st := start(t, a, engine.StartRequest{})
	state, code := r.prov.Authorize(t, st.AuthURL)
	f, err := b.Callback(bg, engine.CallbackParams{State: state, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)

	first, _, err := a.Token(bg, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	clk.Advance(2 * time.Hour) // past the access token's expiry on both replicas
	before := r.prov.Calls()
	replicas := []*replica{a, b}
	got := make([]string, 64)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			tok, _, err := replicas[i%2].Token(bg, engine.TokenKey{Provider: "gh"})
			if assert.NoError(t, err) {
				got[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, r.prov.Calls()-before, "one refresh request for 64 callers on two replicas")
	assert.NotEqual(t, first.AccessToken, got[0], "the expired token was refreshed")
	assert.Contains(t, r.prov.Issued(), got[0])
	for _, tok := range got {
		assert.Equal(t, got[0], tok, "every caller gets the one refreshed token")
	}
	h, err := a.History(bg, state)
	require.NoError(t, err)
	var refreshed int
	for _, rec := range h {
		if rec.Event == states.TokenRefreshed {
			refreshed++
		}
	}
	assert.Equal(t, 1, refreshed, "the refresh is recorded once")
}
