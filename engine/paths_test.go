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

func TestStartIssuesAuthorizationURL(t *testing.T) {
	h := newHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Scopes: []string{"gist"}})
	require.NoError(t, err)
	q := queryOf(t, st.AuthURL)
	assert.Equal(t, st.ID, q.Get("state"))
	assert.Equal(t, "gist", q.Get("scope"))
	assert.Equal(t, st.RedirectURI, q.Get("redirect_uri"))
	assert.True(t, strings.HasPrefix(st.AuthURL, "https://auth.example.test/authorize?"))
	assert.Len(t, st.ID, 43, "256 bits, base64url without padding")
	assert.NotContains(t, st.ID, "=")
	assert.Equal(t, engine.DefaultTTL, st.Deadline.Sub(epoch))

	f := h.status(st.ID)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Equal(t, []string{"gist"}, f.Scopes)
	assert.Equal(t, states.Loopback, f.Transport)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued}, h.events(st.ID))

	other := h.start("someone")
	assert.NotEqual(t, st.ID, other.ID)
}

func TestStartTransports(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) {
		c.PublicBaseURL = "https://flowd.example.org/"
		c.ManualRedirectURL = "https://flowd.example.org/manual"
	})
	for tr, want := range map[states.Transport]string{
		states.Loopback: engine.DefaultLoopbackRedirectURL,
		states.Gateway:  "https://flowd.example.org" + engine.CallbackPath,
		states.Manual:   "https://flowd.example.org/manual",
	} {
		st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: tr, Account: string(tr)})
		require.NoError(t, err)
		assert.Equal(t, want, st.RedirectURI, tr)
		assert.Equal(t, want, queryOf(t, st.AuthURL).Get("redirect_uri"))
		assert.Equal(t, tr, h.status(st.ID).Transport)
	}
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: "carrier-pigeon"})
	assert.ErrorIs(t, err, engine.ErrBadTransport)
}

func TestStartGatewayWithoutPublicBaseURL(t *testing.T) {
	h := newHarness(t)
	before := dump(t, h.log)
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: states.Gateway})
	require.ErrorIs(t, err, engine.ErrNoGateway)
	assert.Contains(t, err.Error(), "public_base_url", "the error says what to set")
	assert.Equal(t, before, dump(t, h.log), "nothing is recorded")
}

func TestProvidersAndUnknownProvider(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) {
		p := c.Providers[0]
		c.Providers = append(c.Providers, engine.Provider{Name: "google", AuthURL: p.AuthURL, TokenURL: p.TokenURL, ClientID: "x", ClientSecret: "s"})
	})
	assert.Equal(t, []string{"gh", "google"}, h.e.Providers())
	p, err := h.e.Provider("google")
	require.NoError(t, err)
	assert.Equal(t, engine.AuthMethodClientSecretBasic, p.AuthMethod, "a client with a secret defaults to client_secret_basic (RFC 6749 2.3.1)")

	_, err = h.e.Start(h.ctx, engine.StartRequest{Provider: "gitlab"})
	require.ErrorIs(t, err, engine.ErrUnknownProvider)
	var upe *engine.UnknownProviderError
	require.True(t, errors.As(err, &upe))
	assert.Equal(t, "gitlab", upe.Name)
	assert.Equal(t, []string{"gh", "google"}, upe.Known)
	assert.Contains(t, err.Error(), "gh, google")
	_, err = h.e.Provider("gitlab")
	assert.ErrorIs(t, err, engine.ErrUnknownProvider)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gitlab"})
	assert.ErrorIs(t, err, engine.ErrUnknownProvider)
	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gitlab"})
	assert.ErrorIs(t, err, engine.ErrUnknownProvider)
}

func TestUnknownProviderWithNoneConfigured(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Config{Log: memlog.New(), Retention: -1})
	require.NoError(t, err)
	defer e.Close()
	assert.Empty(t, e.Providers())
	_, err = e.Start(context.Background(), engine.StartRequest{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrUnknownProvider)
	assert.Contains(t, err.Error(), "config")
}

func TestOpenRefusesInvalidProviders(t *testing.T) {
	good := engine.Provider{Name: "gh", AuthURL: "https://a.test/auth", TokenURL: "https://a.test/token", ClientID: "id"}
	for name, tc := range map[string]struct {
		mutate func(*engine.Provider)
		want   string
	}{
		"unknown auth method":     {func(p *engine.Provider) { p.AuthMethod = "private_key_jwt" }, "AuthMethod"},
		"basic without secret":    {func(p *engine.Provider) { p.AuthMethod = engine.AuthMethodClientSecretBasic }, "needs a client secret"},
		"post without secret":     {func(p *engine.Provider) { p.AuthMethod = engine.AuthMethodClientSecretPost }, "needs a client secret"},
		"none with a secret":      {func(p *engine.Provider) { p.AuthMethod = engine.AuthMethodNone; p.ClientSecret = "s" }, "sends no client secret"},
		"iss required, no issuer": {func(p *engine.Provider) { p.RequireIssuer = true }, "RequireIssuer needs Issuer"},
		"no name":                 {func(p *engine.Provider) { p.Name = "" }, "no name"},
		"relative token URL":      {func(p *engine.Provider) { p.TokenURL = "/token" }, "token URL"},
		"bad auth URL scheme":     {func(p *engine.Provider) { p.AuthURL = "ftp://a.test/auth" }, "auth URL"},
		"no client id":            {func(p *engine.Provider) { p.ClientID = "" }, "client id"},
	} {
		t.Run(name, func(t *testing.T) {
			p := good
			tc.mutate(&p)
			_, err := engine.Open(context.Background(), engine.Config{Log: memlog.New(), Providers: []engine.Provider{p}, Retention: -1})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("duplicate name", func(t *testing.T) {
		_, err := engine.Open(context.Background(), engine.Config{Log: memlog.New(), Providers: []engine.Provider{good, good}, Retention: -1})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "twice")
	})
	t.Run("no log", func(t *testing.T) {
		_, err := engine.Open(context.Background(), engine.Config{Providers: []engine.Provider{good}})
		require.Error(t, err)
	})
}

func TestCallbackProviderDenied(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied", ErrorDescription: "The user has denied your application access."})
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ProviderDenied, f.Reason)
	assert.Equal(t, "access_denied", f.ErrorCode)
	assert.Equal(t, "The user has denied your application access.", f.Message)
	assert.Zero(t, h.prov.Calls())
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.Failed}, h.events(st.ID))
}

// A provider error wins over a code that came along with it.
func TestCallbackProviderErrorWithCode(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code, Error: "server_error"})
	require.NoError(t, err)
	assert.Equal(t, states.ProviderDenied, f.Reason)
	assert.Zero(t, h.prov.Calls())
}

func TestCallbackWithoutCodeOrError(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID})
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.InvalidCallback, f.Reason)
	assert.NotEmpty(t, f.Message)
	assert.Zero(t, h.prov.Calls())
}

func TestCallbackUnknownStateWritesNothing(t *testing.T) {
	var unknown int
	h := newHarness(t, func(c *engine.Config) { c.Hooks.UnknownCallback = func() { unknown++ } })
	st := h.start("")
	before := dump(t, h.log)
	for _, state := range []string{"no-such-state", "", st.ID + "x", st.ID[:12]} {
		_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: state, Code: codePrefix + "x"})
		require.ErrorIs(t, err, engine.ErrUnknownState, state)
		_, err = h.e.Status(h.ctx, state)
		assert.ErrorIs(t, err, engine.ErrUnknownState)
		_, err = h.e.Cancel(h.ctx, state)
		assert.ErrorIs(t, err, engine.ErrUnknownState)
		_, err = h.e.History(h.ctx, state)
		assert.ErrorIs(t, err, engine.ErrUnknownState)
		_, err = h.e.Wait(h.ctx, state)
		assert.ErrorIs(t, err, engine.ErrUnknownState)
	}
	assert.Equal(t, before, dump(t, h.log), "an unknown state changes no flow")
	assert.Equal(t, 4, unknown)
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State)
	assert.Zero(t, h.prov.Calls())
}

func TestLateCallbackAfterEnd(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	code := h.prov.LastRequest().Code
	for i := 1; i <= 3; i++ {
		got, err := h.e.Callback(h.ctx, engine.CallbackParams{State: f.ID, Code: code})
		require.ErrorIs(t, err, engine.ErrNotAwaiting)
		var fe *engine.FlowError
		require.True(t, errors.As(err, &fe))
		assert.Equal(t, states.Complete, fe.Flow.State)
		assert.Equal(t, states.Complete, got.State)
		assert.Equal(t, i, got.IgnoredCallbacks)
	}
	// A late provider error is recorded too and changes nothing.
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: f.ID, Error: "access_denied"})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)

	after := h.status(f.ID)
	assert.Equal(t, states.Complete, after.State)
	assert.Equal(t, states.Exchanged, after.Reason)
	assert.Equal(t, f.Ended, after.Ended)
	assert.Equal(t, 4, after.IgnoredCallbacks)
	assert.Equal(t, 1, h.prov.Calls())
	hist, err := h.e.History(h.ctx, f.ID)
	require.NoError(t, err)
	last := hist[len(hist)-1]
	assert.Equal(t, states.CallbackIgnored, last.Event)
	assert.Equal(t, states.IgnoredFinished, last.Data.Ignored)
	assert.Equal(t, states.Complete, last.From)
	assert.Equal(t, states.Complete, last.To)

	// And after a restart, when the flow is no longer in memory at all.
	h.restart()
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: f.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Equal(t, 5, h.status(f.ID).IgnoredCallbacks)
	assert.Equal(t, 1, h.prov.Calls())
	checkReplay(t, h.log)
}

func TestCallbackAfterDeadlineBeforeTimer(t *testing.T) {
	// A clock whose timers never run: the deadline passes but nothing fires.
	clk := &frozenTimers{now: epoch}
	h := newHarness(t, func(c *engine.Config) { c.Clock = clk })
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	clk.set(st.Deadline)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrExpired)
	assert.Equal(t, states.Expired, f.State)
	assert.Equal(t, states.DeadlineExpired, f.Reason)
	assert.Zero(t, h.prov.Calls(), "an expired flow's code is never exchanged")
	assert.Equal(t, states.Expired, h.status(st.ID).State)
	assert.Zero(t, h.e.Stats().Live)
}

func TestCancel(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	f, err := h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.Canceled, f.Reason)
	assert.Zero(t, h.e.Stats().Live)

	_, err = h.e.Cancel(h.ctx, st.ID)
	require.ErrorIs(t, err, engine.ErrNotAwaiting, "canceling a finished flow")
	_, code := h.prov.Authorize(t, st.AuthURL)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, h.prov.Calls())
	assert.Equal(t, states.Canceled, h.status(st.ID).Reason)

	done := h.connect("")
	_, err = h.e.Cancel(h.ctx, done.ID)
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Equal(t, states.Complete, h.status(done.ID).State)
}

func TestCancelMidExchange(t *testing.T) {
	h := newHarness(t)
	st, _, finish := h.exchanging()
	f, err := h.e.Cancel(h.ctx, st.ID)
	require.ErrorIs(t, err, engine.ErrExchangeInProgress)
	assert.True(t, f.Exchanging)
	f, _ = finish()
	assert.Equal(t, states.Complete, f.State)
}

func TestSupersede(t *testing.T) {
	h := newHarness(t)
	a := h.start("alice")
	bob := h.start("bob")
	a2 := h.start("alice")
	assert.Equal(t, []string{a.ID}, a2.Superseded)
	assert.Empty(t, bob.Superseded)

	f := h.status(a.ID)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.Superseded, f.Reason)
	assert.Equal(t, a2.ID, f.SupersededBy)
	assert.Equal(t, states.AwaitingCallback, h.status(bob.ID).State, "a different account is not superseded")
	assert.Equal(t, states.AwaitingCallback, h.status(a2.ID).State)

	// The superseded flow's callback is turned away and never exchanged.
	_, code := h.prov.Authorize(t, a.AuthURL)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: a.ID, Code: code})
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, h.prov.Calls())

	// Another provider, same account: not superseded either.
	h2 := newHarness(t, func(c *engine.Config) {
		p := c.Providers[0]
		p2 := p
		p2.Name = "gl"
		c.Providers = append(c.Providers, p2)
	})
	x := h2.start("alice")
	y, err := h2.e.Start(h2.ctx, engine.StartRequest{Provider: "gl", Account: "alice"})
	require.NoError(t, err)
	assert.Empty(t, y.Superseded)
	assert.Equal(t, states.AwaitingCallback, h2.status(x.ID).State)
}

// Racing Starts of one owner: however they interleave, exactly one flow
// stays live, and no two flows name each other.
func TestConcurrentStartsNeverSupersedeEachOther(t *testing.T) {
	for round := range 20 {
		_ = round
		h := newHarness(t)
		const n = 8
		var wg sync.WaitGroup
		started := make([]engine.Started, n)
		for i := range n {
			wg.Go(func() {
				st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "alice"})
				assert.NoError(t, err)
				started[i] = st
			})
		}
		wg.Wait()
		live := 0
		by := map[string]string{}
		for _, st := range started {
			f := h.status(st.ID)
			if f.State.Live() {
				live++
				continue
			}
			require.Equal(t, states.Superseded, f.Reason)
			by[st.ID] = f.SupersededBy
		}
		require.Equal(t, 1, live)
		for x, y := range by {
			require.NotEqual(t, x, by[y], "flows %s and %s superseded each other", x, y)
		}
		require.Equal(t, 1, h.e.Stats().Live)
		checkReplay(t, h.log)
		require.NoError(t, h.e.Close())
	}
}

// A flow mid-exchange is left to finish when superseded: its code is
// already spent, and ending it would throw the token away.
func TestSupersedeLeavesExchangeToFinish(t *testing.T) {
	h := newHarness(t)
	a, _, finish := h.exchanging()
	b := h.start("")
	assert.Empty(t, b.Superseded)
	_, err := finish()
	require.NoError(t, err)
	assert.Equal(t, states.Complete, h.status(a.ID).State)
	assert.Equal(t, states.AwaitingCallback, h.status(b.ID).State)
}

func TestWaitWokenByCommit(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)

	const waiters = 3
	got := make(chan states.Flow, waiters)
	for range waiters {
		go func() {
			f, err := h.e.Wait(h.ctx, st.ID)
			assert.NoError(t, err)
			got <- f
		}()
	}
	// The clock stands still and nobody polls: the waiters stay blocked.
	select {
	case f := <-got:
		t.Fatalf("Wait returned before the flow ended: %+v", f)
	case <-time.After(50 * time.Millisecond):
	}
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	for range waiters {
		select {
		case f := <-got:
			assert.Equal(t, states.Complete, f.State)
			assert.Equal(t, []string{"repo", "read:user"}, f.GrantedScopes)
		case <-time.After(10 * time.Second):
			t.Fatal("Wait was not woken by the commit that ended the flow")
		}
	}
	// Waiting on a finished flow returns at once.
	f, err := h.e.Wait(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
}

func TestWaitWokenByExpiry(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	got := make(chan states.Flow, 1)
	blocked := make(chan struct{})
	go func() {
		close(blocked)
		f, err := h.e.Wait(h.ctx, st.ID)
		assert.NoError(t, err)
		got <- f
	}()
	<-blocked
	h.clk.Advance(engine.DefaultTTL)
	select {
	case f := <-got:
		assert.Equal(t, states.Expired, f.State)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait was not woken by expiry")
	}
}

func TestWaitRespectsContext(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	ctx, cancel := context.WithCancel(h.ctx)
	res := make(chan error, 1)
	var f states.Flow
	go func() {
		var err error
		f, err = h.e.Wait(ctx, st.ID)
		res <- err
	}()
	cancel()
	require.ErrorIs(t, <-res, context.Canceled)
	assert.Equal(t, states.AwaitingCallback, f.State, "the flow as it stands")

	ctx, cancel = context.WithTimeout(h.ctx, 20*time.Millisecond)
	defer cancel()
	_, err := h.e.Wait(ctx, st.ID)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, states.AwaitingCallback, h.status(st.ID).State, "giving up waiting does not end the flow")
}

func TestWaitEndsOnClose(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	res := make(chan error, 1)
	go func() {
		_, err := h.e.Wait(h.ctx, st.ID)
		res <- err
	}()
	require.NoError(t, h.e.Close())
	require.ErrorIs(t, <-res, engine.ErrClosed)
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrClosed)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: "x"})
	require.ErrorIs(t, err, engine.ErrClosed)
	_, err = h.e.Cancel(h.ctx, st.ID)
	require.ErrorIs(t, err, engine.ErrClosed)
	require.NoError(t, h.e.Close(), "Close twice is fine")
}

func TestList(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) {
		p2 := c.Providers[0]
		p2.Name = "gl"
		c.Providers = append(c.Providers, p2)
	})
	done := h.connect("a")
	h.clk.Advance(time.Second)
	canceled := h.start("b")
	_, err := h.e.Cancel(h.ctx, canceled.ID)
	require.NoError(t, err)
	h.clk.Advance(time.Second)
	waiting := h.start("c")
	h.clk.Advance(time.Second)
	gl, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gl"})
	require.NoError(t, err)

	ids := func(f engine.Filter) []string {
		t.Helper()
		flows, err := h.e.List(h.ctx, f)
		require.NoError(t, err)
		out := []string{}
		for _, fl := range flows {
			out = append(out, fl.ID)
		}
		return out
	}
	assert.Equal(t, []string{gl.ID, waiting.ID, canceled.ID, done.ID}, ids(engine.Filter{}), "newest first")
	assert.Equal(t, []string{gl.ID, waiting.ID}, ids(engine.Filter{States: []states.State{states.AwaitingCallback}}))
	assert.Equal(t, []string{waiting.ID}, ids(engine.Filter{States: []states.State{states.AwaitingCallback}, Provider: "gh"}))
	assert.Equal(t, []string{canceled.ID}, ids(engine.Filter{States: []states.State{states.Error}}))
	assert.Equal(t, []string{canceled.ID, done.ID}, ids(engine.Filter{States: []states.State{states.Complete, states.Error}}))
	assert.Equal(t, []string{gl.ID}, ids(engine.Filter{Provider: "gl"}))
	assert.Equal(t, []string{}, ids(engine.Filter{Provider: "nope"}))
	assert.Equal(t, []string{}, ids(engine.Filter{States: []states.State{states.Expired}}))

	// The same after a restart, when only live flows are in memory.
	h.restart()
	assert.Equal(t, []string{gl.ID, waiting.ID, canceled.ID, done.ID}, ids(engine.Filter{}))
	assert.Equal(t, []string{gl.ID, waiting.ID}, ids(engine.Filter{States: []states.State{states.AwaitingCallback}}))
}

func TestHooks(t *testing.T) {
	var mu sync.Mutex
	var events []states.Event
	appends := 0
	h := newHarness(t, func(c *engine.Config) {
		c.Hooks.Transition = func(rec states.Record, f states.Flow) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, rec.Event)
		}
		c.Hooks.Append = func(d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			appends++
		}
	})
	h.connect("")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.ExchangeStarted, states.ExchangeSucceeded}, events)
	assert.GreaterOrEqual(t, appends, 3)
}

// frozenTimers is a clock whose time is set by hand and whose timers never
// fire: it shows what a callback sees between a deadline and its timer.
type frozenTimers struct {
	mu  sync.Mutex
	now time.Time
}

func (c *frozenTimers) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *frozenTimers) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *frozenTimers) AfterFunc(time.Duration, func()) engine.Timer { return stoppedTimer{} }

type stoppedTimer struct{}

func (stoppedTimer) Stop() bool { return true }
