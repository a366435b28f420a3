package engine_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// callbackOf parses the redirect the fake provider sent the browser to.
func callbackOf(t *testing.T, redirect string) engine.CallbackParams {
	t.Helper()
	u, err := url.Parse(redirect)
	require.NoError(t, err)
	q := u.Query()
	return engine.CallbackParams{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"),
		ErrorDescription: q.Get("error_description"), Issuer: q.Get("iss")}
}

// issuerHarness configures gh as the strict provider's metadata says: its
// issuer, and (when required) iss on every redirect.
func issuerHarness(t *testing.T, required bool) *harness {
	t.Helper()
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{})
		p := providerConfig(prov, "gh")
		p.Issuer, p.RequireIssuer = prov.Issuer, required
		c.Providers = []engine.Provider{p}
	})
	h.prov = prov
	return h
}

// RFC 9207 section 2.4: a redirect whose iss is not the expected issuer,
// or has none where the server promised one, is refused before its code
// goes anywhere, and the flow ends issuer_mismatch.
func TestIssuerMismatchIsRefusedBeforeTheExchange(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate  func(p *engine.CallbackParams)
		require bool
		want    string
	}{
		"wrong iss":                 {func(p *engine.CallbackParams) { p.Issuer = "https://evil.example" }, false, `"https://evil.example"`},
		"iss with a trailing slash": {func(p *engine.CallbackParams) { p.Issuer += "/" }, true, "not the expected issuer"},
		"iss missing, required":     {func(p *engine.CallbackParams) { p.Issuer = "" }, true, "carried no iss"},
		"wrong iss on an error": {func(p *engine.CallbackParams) {
			p.Code, p.Error, p.Issuer = "", "access_denied", "https://evil.example"
		}, true, "not the expected issuer"},
	} {
		t.Run(name, func(t *testing.T) {
			h := issuerHarness(t, tc.require)
			st := h.start("")
			p := callbackOf(t, h.prov.Redirect(t, st.AuthURL))
			require.Equal(t, h.prov.Issuer, p.Issuer, "the strict provider sends iss")
			tc.mutate(&p)
			f, err := h.e.Callback(h.ctx, p)
			require.NoError(t, err)
			assert.Equal(t, states.Error, f.State)
			assert.Equal(t, states.IssuerMismatch, f.Reason)
			assert.Contains(t, f.Message, tc.want)
			assert.Contains(t, f.Message, h.prov.Issuer, "the message names the expected issuer")
			assert.Zero(t, h.prov.Calls(), "the code never reached the token endpoint")
			assert.NotContains(t, h.events(st.ID), states.ExchangeStarted)
			_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			assert.ErrorIs(t, err, engine.ErrNoToken)
			checkReplay(t, h.log)
		})
	}
}

func TestIssuerThatFitsCompletes(t *testing.T) {
	for name, tc := range map[string]struct {
		require bool
		drop    bool
	}{
		"right iss, required":       {require: true},
		"right iss, not required":   {require: false},
		"no iss where not required": {require: false, drop: true},
	} {
		t.Run(name, func(t *testing.T) {
			h := issuerHarness(t, tc.require)
			st := h.start("")
			p := callbackOf(t, h.prov.Redirect(t, st.AuthURL))
			if tc.drop {
				p.Issuer = ""
			}
			f, err := h.e.Callback(h.ctx, p)
			require.NoError(t, err)
			assert.Equal(t, states.Complete, f.State, f.Message)
			hist, err := h.e.History(h.ctx, st.ID)
			require.NoError(t, err)
			assert.Equal(t, h.prov.Issuer, hist[0].Data.Issuer, "the expected issuer is in the created record")
			assert.Equal(t, tc.require, hist[0].Data.IssuerRequired)
		})
	}
	t.Run("no expected issuer takes any iss", func(t *testing.T) {
		h := newHarness(t)
		st := h.start("")
		p := callbackOf(t, h.prov.Redirect(t, st.AuthURL))
		p.Issuer = "https://anything.example"
		f, err := h.e.Callback(h.ctx, p)
		require.NoError(t, err)
		assert.Equal(t, states.Complete, f.State)
	})
}

// The issuer is fixed when the flow starts: an engine reopened on the same
// log refuses a wrong iss for it even if its provider is now configured
// without one.
func TestIssuerCheckSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flowd.db")
	prov := oauthtest.New(t, oauthtest.Options{})
	p := providerConfig(prov, "gh")
	p.Issuer, p.RequireIssuer = prov.Issuer, true
	open := func(p engine.Provider) (*engine.Engine, *persist.DB) {
		db, err := persist.Open(path, persist.Options{})
		require.NoError(t, err)
		e, err := engine.Open(ctx, engine.Config{Log: db, Providers: []engine.Provider{p}})
		require.NoError(t, err)
		return e, db
	}
	e, db := open(p)
	st, err := e.Start(ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	redirect := prov.Redirect(t, st.AuthURL)
	require.NoError(t, e.Close())
	require.NoError(t, db.Close())

	for _, reopened := range []engine.Provider{p, func() engine.Provider { q := p; q.Issuer, q.RequireIssuer = "", false; return q }()} {
		e, db = open(reopened)
		cb := callbackOf(t, redirect)
		cb.Issuer = "https://evil.example"
		f, err := e.Callback(ctx, cb)
		if reopened.Issuer == p.Issuer {
			require.NoError(t, err)
			assert.Equal(t, states.IssuerMismatch, f.Reason)
		} else {
			var fe *engine.FlowError
			require.True(t, errors.As(err, &fe), "the flow already ended: %v", err)
			assert.Equal(t, states.IssuerMismatch, fe.Flow.Reason)
		}
		assert.Zero(t, prov.Calls(), "no code reached the token endpoint")
		require.NoError(t, e.Close())
		require.NoError(t, db.Close())
	}

	// A second flow started under the issuer and recovered by an engine
	// configured without one is still checked against the recorded issuer.
	e, db = open(p)
	st, err = e.Start(ctx, engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	redirect = prov.Redirect(t, st.AuthURL)
	require.NoError(t, e.Close())
	require.NoError(t, db.Close())
	loose := p
	loose.Issuer, loose.RequireIssuer = "", false
	e, db = open(loose)
	defer db.Close()
	defer e.Close()
	cb := callbackOf(t, redirect)
	cb.Issuer = ""
	f, err := e.Callback(ctx, cb)
	require.NoError(t, err)
	assert.Equal(t, states.IssuerMismatch, f.Reason, "required iss is kept from the created record")
	assert.Zero(t, prov.Calls())
}

func TestChooseAuthMethod(t *testing.T) {
	for _, tc := range []struct {
		supported []string
		secret    bool
		want      engine.AuthMethod
		err       string
	}{
		{nil, true, engine.AuthMethodClientSecretBasic, ""},
		{nil, false, "", "none"},
		{[]string{"none"}, false, engine.AuthMethodNone, ""},
		{[]string{"client_secret_basic", "client_secret_post", "none"}, false, engine.AuthMethodNone, ""},
		{[]string{"client_secret_post", "client_secret_basic"}, true, engine.AuthMethodClientSecretBasic, ""},
		{[]string{"client_secret_post"}, true, engine.AuthMethodClientSecretPost, ""},
		{[]string{"client_secret_basic", "client_secret_post"}, false, "", "client_secret_basic, client_secret_post"},
		{[]string{"private_key_jwt"}, true, "", "private_key_jwt"},
		{[]string{"none"}, true, "", "neither"},
	} {
		got, err := engine.ChooseAuthMethod(tc.supported, tc.secret)
		if tc.err != "" {
			require.ErrorIs(t, err, engine.ErrNoAuthMethod, "%v secret=%v", tc.supported, tc.secret)
			assert.Contains(t, err.Error(), tc.err)
			continue
		}
		require.NoError(t, err, "%v secret=%v", tc.supported, tc.secret)
		assert.Equal(t, tc.want, got, "%v secret=%v", tc.supported, tc.secret)
	}
}

// A public client (no secret) against a strict server: the exchange and
// the refresh send client_id in the form, no Authorization header and no
// client_secret field at all (x/oauth2 with AuthStyleInParams and an empty
// secret leaves it out; this holds it to that).
func TestPublicClientSendsNoSecret(t *testing.T) {
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{Public: true})
		m, err := engine.ChooseAuthMethod(prov.AuthMethods, false)
		require.NoError(t, err)
		require.Equal(t, engine.AuthMethodNone, m)
		p := providerConfig(prov, "gh")
		p.AuthMethod = m
		c.Providers = []engine.Provider{p}
	})
	h.prov = prov
	prov.SetExpiresIn(1)
	f := h.connect("")
	assert.True(t, f.TokenStored)
	h.clk.Advance(2 * time.Second)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err, "the refresh authenticates the same way")
	reqs := prov.Requests()
	require.Len(t, reqs, 2)
	for _, r := range reqs {
		assert.False(t, r.HasBasic, "%s: no Authorization header", r.GrantType)
		assert.False(t, r.Form.Has("client_secret"), "%s: no client_secret field, not even an empty one", r.GrantType)
		assert.Equal(t, prov.ClientID, r.Form.Get("client_id"), r.GrantType)
	}
	assert.Equal(t, []string{"authorization_code", "refresh_token"}, []string{reqs[0].GrantType, reqs[1].GrantType})
}

// A server that advertises only client_secret_post gets post, chosen from
// its metadata, on the first and only exchange.
func TestPostOnlyServerGetsPost(t *testing.T) {
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodPost}})
		m, err := engine.ChooseAuthMethod(prov.AuthMethods, true)
		require.NoError(t, err)
		p := providerConfig(prov, "gh")
		p.AuthMethod = m
		c.Providers = []engine.Provider{p}
	})
	h.prov = prov
	h.connect("")
	assert.Equal(t, 1, prov.Calls())
	r := prov.LastRequest()
	assert.False(t, r.HasBasic)
	assert.Equal(t, clientSecret, r.Form.Get("client_secret"))
	h.clk.Advance(2 * time.Hour) // past the token's expiry: Token refreshes
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	r = prov.LastRequest()
	assert.Equal(t, "refresh_token", r.GrantType)
	assert.False(t, r.HasBasic, "the refresh uses the same method")
	assert.Equal(t, clientSecret, r.Form.Get("client_secret"))
	p, err := h.e.Provider("gh")
	require.NoError(t, err)
	assert.Equal(t, engine.AuthMethodClientSecretPost, p.AuthMethod)
}

// Wait on a flow that has already finished returns it even when the
// context is done, on the bbolt log as on memlog.
func TestWaitOnFinishedFlowWithDoneContext(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T) engine.Log{
		"memlog": func(*testing.T) engine.Log { return memlog.New() },
		"bbolt": func(t *testing.T) engine.Log {
			db, err := persist.Open(filepath.Join(t.TempDir(), "flowd.db"), persist.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			return db
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(c *engine.Config) { c.Log = mk(t) })
			f := h.connect("")
			done, cancel := context.WithCancel(h.ctx)
			cancel()
			for i := 0; i < 20; i++ { // a select on two ready channels is random: try it often
				got, err := h.e.Wait(done, f.ID)
				require.NoError(t, err)
				assert.Equal(t, states.Complete, got.State)
			}
			h.restart() // now finished flows are read from the log only
			got, err := h.e.Wait(done, f.ID)
			require.NoError(t, err)
			assert.Equal(t, states.Complete, got.State)
			// A live flow still reports the context's error.
			st := h.start("other")
			got, err = h.e.Wait(done, st.ID)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, states.AwaitingCallback, got.State)
		})
	}
}
