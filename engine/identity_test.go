package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// identifier is a Config.Identify for tests: it answers with the identity
// next says and records the nonces it was handed.
type identifier struct {
	mu     sync.Mutex
	nonces []string
	next   func(tok *oauth2.Token) (engine.Identity, error)
}

func (i *identifier) identify(_ context.Context, _ engine.Provider, tok *oauth2.Token, nonce string) (engine.Identity, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.nonces = append(i.nonces, nonce)
	if i.next == nil {
		return engine.Identity{}, nil
	}
	return i.next(tok)
}

func (i *identifier) as(id engine.Identity) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.next = func(*oauth2.Token) (engine.Identity, error) { return id, nil }
}

func (i *identifier) seen() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.nonces...)
}

func withIdentify(id *identifier) harnessOption {
	return func(c *engine.Config) { c.Identify = id.identify }
}

func withScopes(scopes ...string) harnessOption {
	return func(c *engine.Config) { c.Providers[0].Scopes = scopes }
}

func lastRecord(t *testing.T, h *harness, state string) states.Record {
	t.Helper()
	hist, err := h.e.History(h.ctx, state)
	require.NoError(t, err)
	return hist[len(hist)-1]
}

// An OpenID Connect flow sends a nonce, records only its fingerprint,
// hands the nonce to Identify (also after a restart, from the sealed
// copy) and deletes it when the flow ends.
func TestOIDCFlowSendsNonce(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id), withScopes("openid", "email"))
	st := h.start("")
	nonce := queryOf(t, st.AuthURL).Get("nonce")
	require.NotEmpty(t, nonce, "an openid flow's authorization request carries a nonce: %s", st.AuthURL)
	created := dump(t, h.log)[0]
	assert.NotEmpty(t, created.Data.NonceFingerprint)
	assert.NotEqual(t, nonce, created.Data.NonceFingerprint)

	h.restart() // the callback lands on an engine that did not start the flow
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	assert.Equal(t, []string{nonce}, id.seen(), "Identify gets the nonce the flow sent")

	_, ok, err := h.log.Secret(h.ctx, "nonce/"+st.ID)
	require.NoError(t, err)
	assert.False(t, ok, "the nonce is deleted once the flow ends")
	for _, rec := range dump(t, h.log) {
		b, err := rec.Encode()
		require.NoError(t, err)
		assert.NotContains(t, string(b), nonce, "the nonce never enters the log")
	}
	assert.NotContains(t, h.logs.String(), nonce, "nor the engine's logs")
	checkReplay(t, h.log)
}

// A provider without openid in its scopes (GitHub) gets no nonce.
func TestNoNonceWithoutOpenID(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	st := h.start("")
	assert.False(t, queryOf(t, st.AuthURL).Has("nonce"))
	assert.Empty(t, dump(t, h.log)[0].Data.NonceFingerprint)
	_, code := h.prov.Authorize(t, st.AuthURL)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, []string{""}, id.seen())
}

// The identity is recorded in the success record and names the account
// the token is stored under; two accounts of one provider keep a token each.
func TestIdentityNamesTheAccount(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	id.as(engine.Identity{Account: "octocat", Subject: "583231", Email: "octocat@github.example"})
	first := h.connect("")
	assert.Equal(t, "octocat", first.Account)
	assert.Equal(t, "583231", first.Subject)
	assert.Equal(t, "octocat@github.example", first.Email)
	rec := lastRecord(t, h, first.ID)
	assert.Equal(t, states.ExchangeSucceeded, rec.Event)
	assert.Equal(t, "octocat", rec.Data.Account)
	assert.Equal(t, "583231", rec.Data.Subject)

	id.as(engine.Identity{Account: "hubot", Subject: "1000"})
	second := h.connect("")
	assert.Equal(t, "hubot", second.Account)

	tok, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "octocat"})
	require.NoError(t, err, "the first account's connection survives the second's connect")
	assert.Equal(t, first.ID, st.Flow)
	assert.Equal(t, h.prov.Issued()[0], tok.AccessToken)
	_, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "hubot"})
	require.NoError(t, err)
	assert.Equal(t, second.ID, st.Flow)
	checkReplay(t, h.log)
}

// A failed identification ends the flow error(identity_invalid), records
// why without any secret, and stores no token: the account's earlier
// connection stays.
func TestIdentityInvalidKeepsNoToken(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id), withScopes("openid"))
	id.as(engine.Identity{Account: "alice@example.com", Subject: "a1"})
	before := h.connect("")
	id.next = func(tok *oauth2.Token) (engine.Identity, error) {
		return engine.Identity{}, fmt.Errorf("id token from %s: nonce mismatch", tok.AccessToken)
	}
	st := h.start("alice@example.com")
	nonce := queryOf(t, st.AuthURL).Get("nonce")
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.IdentityInvalid, f.Reason)
	assert.False(t, f.TokenStored)
	assert.Contains(t, f.Message, "nonce mismatch")
	issued := h.prov.Issued()
	assert.NotContains(t, f.Message, issued[len(issued)-1], "the token is redacted from the recorded message")
	assert.NotContains(t, f.Message, nonce)

	_, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "alice@example.com"})
	require.NoError(t, err)
	assert.Equal(t, before.ID, stored.Flow, "the earlier connection is kept")
	checkReplay(t, h.log)
}

// Signing in as another account than the one a connect names ends it
// error(account_mismatch) and replaces nothing.
func TestAccountMismatch(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	id.as(engine.Identity{Account: "octocat"})
	h.connect("")
	id.as(engine.Identity{Account: "hubot"})
	st := h.start("octocat")
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.AccountMismatch, f.Reason)
	assert.Contains(t, f.Message, `"hubot"`)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "hubot"})
	assert.True(t, errors.Is(err, engine.ErrNoToken), "no token is stored for the account that signed in: %v", err)
}

// Connecting again with more scopes asks for the union of the granted and
// the new ones; the connection is replaced only when the step-up
// completes, and a failed one keeps the old token.
func TestScopeStepUp(t *testing.T) {
	h := newHarness(t)
	h.prov.SetScope("repo")
	first, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "me", Scopes: []string{"repo"}})
	require.NoError(t, err)
	_, code := h.prov.Authorize(t, first.AuthURL)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: first.ID, Code: code})
	require.NoError(t, err)

	h.prov.Refuse("invalid_grant", "the user took too long")
	failed, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "me", Scopes: []string{"gist"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"gist", "repo"}, strings.Fields(queryOf(t, failed.AuthURL).Get("scope")), "the step-up asks for the union")
	assert.Equal(t, []string{"gist", "repo"}, failed.Scopes)
	_, code = h.prov.Authorize(t, failed.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: failed.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.ExchangeFailed, f.Reason)
	_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "me"})
	require.NoError(t, err)
	assert.Equal(t, first.ID, st.Flow, "a failed step-up keeps the old token")
	assert.Equal(t, []string{"repo"}, st.Scopes)

	h.prov.SetOverride(nil)
	h.prov.SetScope("gist repo")
	up, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "me", Scopes: []string{"gist"}})
	require.NoError(t, err)
	_, code = h.prov.Authorize(t, up.AuthURL)
	f, err = h.e.Callback(h.ctx, engine.CallbackParams{State: up.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	_, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "me"})
	require.NoError(t, err)
	assert.Equal(t, up.ID, st.Flow, "the completed step-up replaces the connection")
	assert.Equal(t, []string{"gist", "repo"}, st.Scopes)

	// Another account steps up nothing of "me".
	other, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: "you", Scopes: []string{"gist"}})
	require.NoError(t, err)
	assert.Equal(t, "gist", queryOf(t, other.AuthURL).Get("scope"))
}

// A token asked for without an account is the provider's only account's;
// with several, the error names them all and no token is handed out.
func TestTokenWithoutAccount(t *testing.T) {
	id := &identifier{}
	h := newHarness(t, withIdentify(id))
	id.as(engine.Identity{Account: "octocat"})
	first := h.connect("")
	_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err, "one account: it is the one")
	assert.Equal(t, first.ID, st.Flow)

	id.as(engine.Identity{Account: "hubot"})
	h.connect("")
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrAccountRequired)
	var are *engine.AccountRequiredError
	require.ErrorAs(t, err, &are)
	assert.Equal(t, []string{"hubot", "octocat"}, are.Accounts)
	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	assert.ErrorIs(t, err, engine.ErrAccountRequired, "nor is one disconnected at random")

	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: "hubot"})
	require.NoError(t, err)
	accounts, err := h.e.Accounts(h.ctx, "gh")
	require.NoError(t, err)
	assert.Equal(t, []string{"octocat"}, accounts)
	_, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, first.ID, st.Flow)
}
