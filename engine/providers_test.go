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
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/states"
)

// A provider added at run time connects like one given to Open, and a
// removed one is refused at Start with the names that remain.
func TestAddAndRemoveProviderAtRunTime(t *testing.T) {
	h := newHarness(t)
	second := oauthtest.New(t, oauthtest.Options{})
	require.NoError(t, h.e.AddProvider(providerConfig(second, "lab")))
	assert.Equal(t, []string{"gh", "lab"}, h.e.Providers())

	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "lab"})
	require.NoError(t, err)
	_, code := second.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "lab"})
	require.NoError(t, err, "the added provider's token is usable")

	err = h.e.AddProvider(providerConfig(second, "lab"))
	require.ErrorIs(t, err, engine.ErrProviderExists)

	require.NoError(t, h.e.RemoveProvider("lab"))
	assert.Equal(t, []string{"gh"}, h.e.Providers())
	_, err = h.e.Start(h.ctx, engine.StartRequest{Provider: "lab"})
	var unknown *engine.UnknownProviderError
	require.ErrorAs(t, err, &unknown)
	assert.Equal(t, []string{"gh"}, unknown.Known)
	require.ErrorIs(t, h.e.RemoveProvider("lab"), engine.ErrUnknownProvider)
}

// An invalid set changes nothing: not the names, not a running flow's
// provider settings.
func TestSetProvidersInvalidSetChangesNothing(t *testing.T) {
	h := newHarness(t)
	second := oauthtest.New(t, oauthtest.Options{})
	bad := []struct {
		name string
		ps   []engine.Provider
	}{
		{"duplicate", []engine.Provider{providerConfig(second, "lab"), providerConfig(second, "lab")}},
		{"no client id", []engine.Provider{providerConfig(second, "lab"), func() engine.Provider {
			p := providerConfig(second, "x")
			p.ClientID = ""
			return p
		}()}},
		{"relative token URL", []engine.Provider{func() engine.Provider {
			p := providerConfig(second, "gh")
			p.TokenURL = "/token"
			return p
		}()}},
	}
	for _, c := range bad {
		err := h.e.SetProviders(c.ps)
		require.ErrorIs(t, err, engine.ErrInvalidProvider, c.name)
		assert.Equal(t, []string{"gh"}, h.e.Providers(), c.name)
	}
	bad1 := providerConfig(second, "")
	require.ErrorIs(t, h.e.AddProvider(bad1), engine.ErrInvalidProvider)
	h.connect("") // gh still works, against its original server
	assert.Zero(t, second.Calls(), "no request reached the server of the refused sets")
}

// SetProviders replaces settings by name: a flow started before the swap
// exchanges its code with the new settings and completes.
func TestSetProvidersReplacesSettingsOfLiveFlows(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	moved := oauthtest.New(t, oauthtest.Options{})
	p := providerConfig(moved, "gh")
	// The code was issued by h.prov; point the new settings' token URL there
	// and let the client id come from the new set.
	p.TokenURL = h.prov.TokenURL
	require.NoError(t, h.e.SetProviders([]engine.Provider{p, providerConfig(moved, "lab")}))
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.Equal(t, []string{"gh", "lab"}, h.e.Providers())
}

// A live flow whose provider was removed keeps its waiters waiting; its
// callback ends it error(provider_removed) without exchange_started and
// without the code reaching any token endpoint.
func TestRemovedProviderEndsFlowWithoutSendingCode(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)

	waited := make(chan states.Flow, 1)
	go func() {
		f, _ := h.e.Wait(h.ctx, st.ID)
		waited <- f
	}()
	require.NoError(t, h.e.SetProviders(nil))
	select {
	case f := <-waited:
		t.Fatalf("Wait returned when the provider was removed: %+v", f)
	case <-time.After(20 * time.Millisecond):
	}
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State, "removing a provider does not end its flows by itself")

	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ProviderRemoved, f.Reason)
	assert.Contains(t, f.Message, `"gh"`)
	assert.NotContains(t, f.Message, code)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.Failed}, h.events(st.ID), "no exchange_started")
	assert.Zero(t, h.prov.CodeRequests(), "the code was never sent")
	assert.Zero(t, h.prov.Uses(code))
	select {
	case f := <-waited:
		assert.Equal(t, states.ProviderRemoved, f.Reason, "the waiter saw the ending")
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the flow ended")
	}
	checkReplay(t, h.log)

	// A repeated callback changes nothing, as for any finished flow.
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, h.prov.CodeRequests())
}

// Replacing, adding and removing providers while flows start and finish on
// other goroutines neither races nor loses a flow: run with -race.
func TestProvidersChangeWhileFlowsRun(t *testing.T) {
	h := newHarness(t)
	other := oauthtest.New(t, oauthtest.Options{})
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			switch i % 3 {
			case 0:
				_ = h.e.AddProvider(providerConfig(other, "lab"))
			case 1:
				_ = h.e.SetProviders([]engine.Provider{providerConfig(h.prov, "gh"), providerConfig(other, "lab")})
			case 2:
				_ = h.e.RemoveProvider("lab")
			}
			_ = h.e.Providers()
		}
	}()
	for i := 0; i < 30; i++ {
		h.connect("")
	}
	cancel()
	wg.Wait()
	err := h.e.SetProviders([]engine.Provider{{Name: "broken"}})
	require.True(t, errors.Is(err, engine.ErrInvalidProvider))
	assert.Contains(t, h.e.Providers(), "gh")
}

// A provider removed while one of its flows is exchanging does not cut the
// exchange short: the code is already spent, so the outcome is recorded
// with the settings the exchange started with.
func TestRemovedProviderMidExchangeFinishes(t *testing.T) {
	h := newHarness(t)
	st, _, finish := h.exchanging()
	require.NoError(t, h.e.RemoveProvider("gh"))
	f, err := finish()
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.Equal(t, states.Exchanged, h.status(st.ID).Reason)
	checkReplay(t, h.log)
}
