package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/states"
)

// refreshTokensSent lists the refresh tokens p was asked to redeem.
func refreshTokensSent(p *oauthtest.Server) []string {
	var out []string
	for _, r := range p.Requests() {
		if r.GrantType == "refresh_token" {
			out = append(out, r.Form.Get("refresh_token"))
		}
	}
	return out
}

func TestTokenRefreshSavesRotatedRefreshToken(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	first := h.prov.Issued() // access, refresh
	require.Len(t, first, 2)

	tok, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, first[0], tok.AccessToken, "a valid token is returned as it is")
	assert.Equal(t, time.Hour, st.Expiry.Sub(h.clk.Now()), "the expiry follows the engine's clock")
	assert.Equal(t, 1, h.prov.Calls())

	h.clk.Advance(time.Hour)
	tok, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	second := h.prov.Issued()[2:]
	assert.Equal(t, second[0], tok.AccessToken)
	assert.Equal(t, second[1], st.RefreshToken, "the rotated refresh token is stored")
	assert.Equal(t, time.Hour, tok.Expiry.Sub(h.clk.Now()))
	assert.Equal(t, []string{"repo", "read:user"}, st.Scopes, "scopes survive a refresh without a scope field")

	// The rotated token is durable: a restarted engine refreshes with it,
	// and the spent one is never sent again.
	h.restart()
	h.clk.Advance(2 * time.Hour)
	tok, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[4], tok.AccessToken)
	sent := refreshTokensSent(h.prov)
	assert.Equal(t, []string{first[1], second[1]}, sent, "each refresh token is used once")
}

func TestTokenRefreshesShortlyBeforeExpiry(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	h.clk.Advance(time.Hour - 5*time.Second)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Len(t, refreshTokensSent(h.prov), 1, "a token about to expire is refreshed, not handed out")
}

// Concurrent callers of an expired token share one refresh: with rotating
// refresh tokens a second refresh would spend a dead token.
func TestTokenConcurrentRefreshOnce(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	h.clk.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			assert.NoError(t, err)
			if tok != nil {
				got[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	assert.Len(t, refreshTokensSent(h.prov), 1)
	for _, a := range got {
		assert.Equal(t, got[0], a)
	}
}

func TestTokenExpiredWithoutRefreshToken(t *testing.T) {
	h := newHarness(t)
	h.prov.SetRefreshTokens(false)
	h.connect("")
	h.clk.Advance(2 * time.Hour)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoRefreshToken)
	assert.NotContains(t, err.Error(), "flowctl", "product advice is flowd's, not the engine's")
	assert.Equal(t, 1, h.prov.Calls(), "nothing to refresh with: the endpoint is not called")
}

func TestTokenWithoutExpiryNeverRefreshes(t *testing.T) {
	h := newHarness(t)
	h.prov.SetExpiresIn(0)
	h.connect("")
	h.clk.Advance(1000 * time.Hour)
	tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[0], tok.AccessToken)
	assert.Empty(t, refreshTokensSent(h.prov))
}

func TestTokenRefreshRefused(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	h.prov.Refuse("invalid_grant", "The refresh token was revoked.")
	h.clk.Advance(2 * time.Hour)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	var re *engine.RefreshError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invalid_grant", re.ErrorCode)
	assert.True(t, re.Rejected())
	assert.True(t, re.NeedsReconnect())
	var rte *oauth2.RetrieveError
	require.ErrorAs(t, err, &rte, "the provider's answer is kept for the embedder")
	assert.Equal(t, "invalid_grant", rte.ErrorCode)
	assert.NotContains(t, err.Error(), "flowctl")
	for _, s := range h.prov.Issued() {
		assert.NotContains(t, err.Error(), s)
	}
	// The stored token is untouched: once the provider is back, it works.
	h.prov.SetOverride(nil)
	tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[2], tok.AccessToken)
}

func TestDisconnect(t *testing.T) {
	h := newHarness(t)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken, "never connected")

	h.connect("")
	res, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationUnsupported, res.Revocation, "the provider has no revocation endpoint, and Disconnect says so")
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken)
	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken)
	h.restart()
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken, "the deletion is durable")
}

// A new connect replaces the stored token.
func TestReconnectReplacesToken(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	second := h.connect("")
	tok, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[2], tok.AccessToken)
	assert.Equal(t, second.ID, st.Flow)
}

// Tokens are kept per account: one account's connect does not replace
// another's token.
func TestTokensPerAccount(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	alice := h.connect("alice")
	tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[0], tok.AccessToken, "the local user's token")

	tok, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "alice"})
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[2], tok.AccessToken)
	assert.Equal(t, alice.ID, st.Flow)

	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: "alice"})
	require.NoError(t, err)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh", Account: "alice"})
	require.ErrorIs(t, err, engine.ErrNoToken)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err, "the local user's token stays")
}

// An embedder's TokenStore receives the token instead of the log.
func TestCustomTokenStore(t *testing.T) {
	ts := &mapTokens{m: map[engine.TokenKey]engine.StoredToken{}}
	h := newHarness(t, func(c *engine.Config) { c.Tokens = ts })
	f := h.connect("")
	ts.mu.Lock()
	st, ok := ts.m[engine.TokenKey{Provider: "gh"}]
	ts.mu.Unlock()
	require.True(t, ok)
	assert.Equal(t, f.ID, st.Flow)
	_, found, err := h.log.Secret(h.ctx, "token/gh/")
	require.NoError(t, err)
	assert.False(t, found, "the default store is not used")
}

type mapTokens struct {
	mu sync.Mutex
	m  map[engine.TokenKey]engine.StoredToken
}

func (s *mapTokens) SaveToken(_ context.Context, k engine.TokenKey, t engine.StoredToken) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = t
	return nil
}

func (s *mapTokens) LoadToken(_ context.Context, k engine.TokenKey) (engine.StoredToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[k]
	if !ok {
		return t, engine.ErrNoToken
	}
	return t, nil
}

func (s *mapTokens) DeleteToken(_ context.Context, k engine.TokenKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// A slow refresh of one provider's token holds up no other provider's.
func TestSlowRefreshBlocksOnlyItsToken(t *testing.T) {
	var gl *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		gl = oauthtest.New(t, oauthtest.Options{})
		c.Providers = append(c.Providers, providerConfig(gl, "gl"))
	})
	h.connect("")
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gl"})
	require.NoError(t, err)
	_, code := gl.Authorize(t, st.AuthURL)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)

	h.clk.Advance(2 * time.Hour)
	release := h.prov.Hold()
	done := make(chan error, 1)
	go func() {
		_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
		done <- err
	}()
	h.prov.WaitEntered(t) // gh's refresh is stuck at its provider
	tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gl"})
	require.NoError(t, err, "gl's token is refreshed while gh's refresh hangs")
	assert.Equal(t, gl.Issued()[2], tok.AccessToken)
	release()
	require.NoError(t, <-done)
}

// obtained_at tells a user how old the access token in hand is: a refresh
// gets a new access token, so it is obtained anew.
func TestTokenRefreshUpdatesObtained(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	connected := st.Obtained
	require.False(t, connected.IsZero())

	h.clk.Advance(time.Hour)
	_, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, time.Hour, st.Obtained.Sub(connected), "a refreshed token was obtained at the refresh")

	// And it is what is stored, not only what this call returned.
	_, st, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, time.Hour, st.Obtained.Sub(connected))
}
