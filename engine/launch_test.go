package engine_test

import (
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// launchToken is the opaque value of a launch link.
func launchToken(t *testing.T, launchURL string) string {
	t.Helper()
	u, err := url.Parse(launchURL)
	require.NoError(t, err)
	require.Equal(t, engine.LaunchPath, u.Path)
	tok := u.Query().Get(engine.LaunchParam)
	require.NotEmpty(t, tok)
	return tok
}

// startLaunched starts a loopback flow with a launch link and opens it, as
// the user's browser would.
func (h *harness) startLaunched() (engine.Started, engine.Launched) {
	h.t.Helper()
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(h.t, err)
	require.NotEmpty(h.t, st.LaunchURL)
	l, err := h.e.Launch(h.ctx, launchToken(h.t, st.LaunchURL))
	require.NoError(h.t, err)
	return st, l
}

func requireFlowErr(t *testing.T, err, want error) states.Flow {
	t.Helper()
	require.ErrorIs(t, err, want)
	var fe *engine.FlowError
	require.True(t, errors.As(err, &fe), "a %T, not a *FlowError: %v", err, err)
	return fe.Flow
}

// The launch link reveals nothing of the flow: not its state, not the PKCE
// challenge, not the provider. Opening it binds the flow and hands back the
// authorization URL.
func TestLaunchLinkRevealsNothingAndBindsTheFlow(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(t, err)
	auth, err := url.Parse(st.AuthURL)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(st.LaunchURL, "http://127.0.0.1:8085/oauth/launch?t="), st.LaunchURL)
	for _, leak := range []string{st.ID, auth.Query().Get("code_challenge"), auth.Host} {
		assert.NotContains(t, st.LaunchURL, leak)
	}
	// Nothing but the opaque value: not even the provider's name (which a
	// random value may contain by chance, so the query's shape is checked).
	launch, err := url.Parse(st.LaunchURL)
	require.NoError(t, err)
	assert.Equal(t, []string{"t"}, slices.Sorted(maps.Keys(launch.Query())), "the launch link's only parameter is the opaque value")
	assert.False(t, h.status(st.ID).Bound(), "not bound before the link is opened")

	l, err := h.e.Launch(h.ctx, launchToken(t, st.LaunchURL))
	require.NoError(t, err)
	assert.Equal(t, st.AuthURL, l.AuthURL)
	assert.Equal(t, st.ID, l.State)
	assert.GreaterOrEqual(t, len(l.Binding), 43, "the binding is 256 random bits")
	f := h.status(st.ID)
	assert.True(t, f.Bound())
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.BrowserBound}, h.events(st.ID))
	for _, r := range dump(t, h.log) {
		b, err := r.Encode()
		require.NoError(t, err)
		assert.NotContains(t, string(b), l.Binding, "the log keeps a fingerprint of the binding, never the binding")
	}
	assert.NotContains(t, h.logs.String(), l.Binding)
	checkReplay(t, h.log)
}

// A forged error, an injected code (a real code the attacker got for the
// flow, delivered without the cookie) and a wrong cookie all change
// nothing: no exchange, the flow keeps waiting, and each is recorded as
// ignored with its own reason. The victim's own callback still completes.
func TestBoundFlowRefusesCallbacksWithoutItsBinding(t *testing.T) {
	h := newHarness(t)
	st, l := h.startLaunched()

	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied", ErrorDescription: "forged"})
	f := requireFlowErr(t, err, engine.ErrBindingMissing)
	assert.Equal(t, states.AwaitingCallback, f.State, "a forged denial does not end the flow")

	_, injected := h.prov.Authorize(t, st.AuthURL) // the attacker signed in as themselves
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: injected})
	requireFlowErr(t, err, engine.ErrBindingMissing)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: injected, Binding: l.Binding + "x"})
	f = requireFlowErr(t, err, engine.ErrBindingMismatch)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.False(t, f.Exchanging)
	assert.Zero(t, h.prov.Uses(injected), "the injected code never reached the token endpoint")

	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code, Binding: l.Binding})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.Equal(t, 1, h.prov.Uses(code))
	assert.Equal(t, 3, f.IgnoredCallbacks)

	hist, err := h.e.History(h.ctx, st.ID)
	require.NoError(t, err)
	var ignored []states.Ignored
	for _, r := range hist {
		if r.Event == states.CallbackIgnored {
			ignored = append(ignored, r.Data.Ignored)
		}
	}
	assert.Equal(t, []states.Ignored{states.IgnoredBindingMissing, states.IgnoredBindingMissing, states.IgnoredBindingMismatch}, ignored)
	checkReplay(t, h.log)
}

// A pasted or relayed callback comes by a channel that authenticates its
// sender (the socket's peer uid, the gateway's token): a bound flow takes it.
func TestBoundFlowTakesAuthenticatedCallback(t *testing.T) {
	h := newHarness(t)
	st, _ := h.startLaunched()
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code, Authenticated: true})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// Without its launch link opened (the user copied the printed URL), a
// loopback flow is not bound and takes a callback without a cookie, as
// before launch links existed.
func TestUnboundFlowTakesCallbackWithoutBinding(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(t, err)
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// The binding is in the log, not in memory: after a restart the flow still
// refuses a callback without it and takes the one with it.
func TestBindingSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	st, l := h.startLaunched()
	h.restart()
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied"})
	requireFlowErr(t, err, engine.ErrBindingMissing)
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code, Binding: l.Binding})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// A launch link works once and for LaunchTTL only; a used, expired or
// unknown link changes nothing, and the first browser keeps the binding.
func TestLaunchLinkWorksOnceAndExpires(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) { c.LaunchTTL = 10 * time.Second })
	st, l := h.startLaunched()
	_, err := h.e.Launch(h.ctx, launchToken(t, st.LaunchURL))
	require.ErrorIs(t, err, engine.ErrLaunchUsed)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.BrowserBound}, h.events(st.ID), "a second opening records nothing")

	late, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "other", Launch: true})
	require.NoError(t, err)
	h.clk.Advance(10 * time.Second)
	_, err = h.e.Launch(h.ctx, launchToken(t, late.LaunchURL))
	require.ErrorIs(t, err, engine.ErrLaunchUnknown, "expired")
	assert.False(t, h.status(late.ID).Bound())
	_, err = h.e.Launch(h.ctx, "no-such-link")
	require.ErrorIs(t, err, engine.ErrLaunchUnknown)

	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code, Binding: l.Binding})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

// A launch link is made only when asked, for any transport: the link is
// on the loopback listener, which a browser on this machine reaches
// whatever the redirect's way back.
func TestLaunchLinkOnlyWhenAsked(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	assert.Empty(t, st.LaunchURL)
	st, err = h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "m", Transport: states.Manual, Launch: true})
	require.NoError(t, err)
	assert.NotEmpty(t, st.LaunchURL)
}

// A launch link of a flow that ended is refused without recording.
func TestLaunchLinkOfEndedFlow(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(t, err)
	_, err = h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	_, err = h.e.Launch(h.ctx, launchToken(t, st.LaunchURL))
	f := requireFlowErr(t, err, engine.ErrNotAwaiting)
	assert.Equal(t, states.Canceled, f.Reason)
}

// Browsers racing for one launch link: exactly one gets the binding, the
// others are told it was used, and the flow is bound once.
func TestLaunchLinkRaceBindsOnce(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Launch: true})
	require.NoError(t, err)
	tok := launchToken(t, st.LaunchURL)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := h.e.Launch(h.ctx, tok)
			errs <- err
		}()
	}
	won := 0
	for range n {
		if err := <-errs; err == nil {
			won++
		} else {
			require.ErrorIs(t, err, engine.ErrLaunchUsed)
		}
	}
	assert.Equal(t, 1, won)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.BrowserBound}, h.events(st.ID))
	checkReplay(t, h.log)
}

// The binding is checked before anything the callback says: a forged
// redirect with a wrong iss (which would end an unbound flow
// issuer_mismatch) does not end a bound one either.
func TestBoundFlowRefusesForgedIssuerBeforeCheckingIt(t *testing.T) {
	h := issuerHarness(t, true)
	st, _ := h.startLaunched()
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied", Issuer: "https://evil.example"})
	f := requireFlowErr(t, err, engine.ErrBindingMissing)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Empty(t, f.Reason)
}
