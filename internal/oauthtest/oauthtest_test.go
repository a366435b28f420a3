package oauthtest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"flowd.local/flowd/internal/oauthtest"
)

const redirect = "http://127.0.0.1:8085/oauth/callback"

// client is what an OAuth client (flowd's engine) is configured with.
func client(s *oauthtest.Server) *oauth2.Config {
	return &oauth2.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: s.AuthStyle}}
}

// authorize builds an authorization URL as a client would and plays the
// user at the provider; it returns the code and the verifier to redeem it.
func authorize(t *testing.T, s *oauthtest.Server, c *oauth2.Config) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	state, code := s.Authorize(t, c.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier)))
	require.Equal(t, "st-1", state)
	return code, verifier
}

// oauthErr returns the OAuth error code of a failed exchange.
func oauthErr(t *testing.T, err error) string {
	t.Helper()
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	return re.ErrorCode
}

func TestCodeRedeemedOnceWithItsVerifier(t *testing.T) {
	ctx := context.Background()
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		s := oauthtest.New(t, oauthtest.Options{AuthStyle: style})
		c := client(s)
		code, verifier := authorize(t, s, c)
		assert.True(t, strings.HasPrefix(code, oauthtest.CodePrefix))

		_, err := c.Exchange(ctx, code, oauth2.VerifierOption("not-the-verifier-"+verifier))
		assert.Equal(t, "invalid_grant", oauthErr(t, err), "a wrong verifier is refused")

		tok, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		require.NoError(t, err)
		assert.Equal(t, "Bearer", tok.TokenType)
		assert.Equal(t, s.Issued(), []string{tok.AccessToken, tok.RefreshToken})
		assert.WithinDuration(t, time.Now().Add(time.Hour), tok.Expiry, time.Minute)

		_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		assert.Equal(t, "invalid_grant", oauthErr(t, err), "a code is redeemed once")
		assert.Equal(t, 3, s.Uses(code))
		assert.Equal(t, 3, s.Calls())
		n, examples := s.Reused()
		assert.Equal(t, 1, n)
		assert.Equal(t, []string{code + " x3"}, examples)

		last := s.LastRequest()
		assert.Equal(t, style == oauth2.AuthStyleInHeader, last.HasBasic)
		assert.Equal(t, style == oauth2.AuthStyleInHeader, !last.Form.Has("client_secret"))
		assert.Equal(t, redirect, last.RedirectURI)
	}
}

func TestClientAndRedirectChecked(t *testing.T) {
	ctx := context.Background()
	s := oauthtest.New(t, oauthtest.Options{})
	c := client(s)
	code, verifier := authorize(t, s, c)

	wrongStyle := *c
	wrongStyle.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	_, err := wrongStyle.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_client", oauthErr(t, err), "credentials where the provider does not take them")

	wrongSecret := *c
	wrongSecret.ClientSecret = "guess"
	_, err = wrongSecret.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_client", oauthErr(t, err))

	otherRedirect := *c
	otherRedirect.RedirectURL = "http://127.0.0.1:9999/oauth/callback"
	_, err = otherRedirect.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_grant", oauthErr(t, err))

	_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err, "refused attempts did not spend the code")
}

func TestRefreshTokensRotate(t *testing.T) {
	ctx := context.Background()
	s := oauthtest.New(t, oauthtest.Options{})
	s.SetScope("a b")
	c := client(s)
	code, verifier := authorize(t, s, c)
	tok, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	assert.Equal(t, "a b", tok.Extra("scope"))

	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err := c.TokenSource(ctx, tok).Token()
	require.NoError(t, err)
	assert.NotEqual(t, tok.RefreshToken, fresh.RefreshToken)
	tok.Expiry = time.Now().Add(-time.Minute)
	_, err = c.TokenSource(ctx, tok).Token()
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "a refresh token is good once")

	s.SetRefreshTokens(false)
	s.SetExpiresIn(0)
	s.OmitScope()
	code, verifier = authorize(t, s, c)
	bare, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	assert.Empty(t, bare.RefreshToken)
	assert.True(t, bare.Expiry.IsZero())
	assert.Nil(t, bare.Extra("scope"))
	assert.Equal(t, 2, s.CodeRequests())
	assert.Equal(t, 2, s.Codes())
	for _, secret := range append(s.Issued(), code, verifier, s.ClientSecret) {
		assert.Contains(t, s.Secrets(), secret)
	}
}

// Codes a test makes up are redeemable when AcceptCode says so, once, with
// any verifier; others are unknown.
func TestAcceptCode(t *testing.T) {
	ctx := context.Background()
	s := oauthtest.New(t, oauthtest.Options{AcceptCode: func(code string) bool { return strings.HasPrefix(code, "c-") }})
	c := client(s)
	_, err := c.Exchange(ctx, "c-1", oauth2.VerifierOption("v"))
	require.NoError(t, err)
	_, err = c.Exchange(ctx, "c-1", oauth2.VerifierOption("v"))
	assert.Equal(t, "invalid_grant", oauthErr(t, err))
	_, err = c.Exchange(ctx, "c-2")
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "no verifier at all is still refused")
	_, err = c.Exchange(ctx, "bad-1", oauth2.VerifierOption("v"))
	assert.Equal(t, "invalid_grant", oauthErr(t, err))
}

func TestHoldRefuseOverrideLatency(t *testing.T) {
	ctx := context.Background()
	slowed := 0
	s := oauthtest.New(t, oauthtest.Options{Latency: func() { slowed++ }})
	c := client(s)
	code, verifier := authorize(t, s, c)

	release := s.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		done <- err
	}()
	s.WaitEntered(t)
	select {
	case <-done:
		t.Fatal("a held request was answered")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	require.NoError(t, <-done)
	assert.Equal(t, 1, slowed)

	s.Refuse("invalid_grant", "The code has expired.")
	code, verifier = authorize(t, s, c)
	_, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "The code has expired.", re.ErrorDescription)

	s.SetOverride(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusTeapot, re.Response.StatusCode)

	s.SetOverride(nil)
	_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err, "overridden answers did not spend the code")

	s.Close()
	_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Error(t, err, "a closed provider cannot be reached")
}

// A hold still waiting when the test ends is released, so the server can
// shut down.
func TestHoldReleasedAtClose(t *testing.T) {
	s := oauthtest.New(t, oauthtest.Options{})
	c := client(s)
	s.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := c.Exchange(context.Background(), "x", oauth2.VerifierOption("v"))
		done <- err
	}()
	s.WaitEntered(t)
	s.Close()
	assert.Error(t, <-done)
}

// The device endpoint is strict where RFC 8628 is: POST only with a
// client_id (section 3.1), the client authenticated as at the token
// endpoint, a poll sooner than the interval is slow_down and the interval
// grows by 5 s for good (section 3.5), an expired code is expired_token,
// and a code is good for one token.
func TestDeviceEndpointIsStrict(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := oauthtest.New(t, oauthtest.Options{Now: func() time.Time { return now }})
	post := func(u string, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := http.PostForm(u, form)
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return resp.StatusCode, m
	}
	resp, err := http.Get(s.DeviceAuthURL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	status, m := post(s.DeviceAuthURL, url.Values{})
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "invalid_request", m["error"])
	status, m = post(s.DeviceAuthURL, url.Values{"client_id": {s.ClientID}, "client_secret": {"wrong"}})
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Equal(t, "invalid_client", m["error"])

	creds := url.Values{"client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}
	status, m = post(s.DeviceAuthURL, creds)
	require.Equal(t, http.StatusOK, status)
	code, user := m["device_code"].(string), m["user_code"].(string)
	assert.EqualValues(t, 5, m["interval"])
	assert.EqualValues(t, 600, m["expires_in"])
	assert.Equal(t, s.VerificationURI+"?user_code="+user, m["verification_uri_complete"])

	poll := func() string {
		t.Helper()
		f := url.Values{"grant_type": {oauthtest.DeviceGrantType}, "device_code": {code}}
		for k, v := range creds {
			f[k] = v
		}
		_, m := post(s.TokenURL, f)
		if e, ok := m["error"].(string); ok {
			return e
		}
		return "token"
	}
	assert.Equal(t, "authorization_pending", poll())
	now = now.Add(4 * time.Second)
	assert.Equal(t, "slow_down", poll(), "4 s after the last poll, with an interval of 5")
	now = now.Add(5 * time.Second)
	assert.Equal(t, "slow_down", poll(), "the interval is 10 s now")
	now = now.Add(15 * time.Second)
	assert.Equal(t, "authorization_pending", poll())
	require.True(t, s.ApproveDevice(user))
	now = now.Add(15 * time.Second)
	assert.Equal(t, "token", poll())
	now = now.Add(15 * time.Second)
	assert.Equal(t, "invalid_grant", poll(), "a device code is good for one token")
	d, ok := s.Device(user)
	require.True(t, ok)
	assert.Equal(t, 2, d.SlowDowns)
	assert.Equal(t, 15*time.Second, d.Interval)
	assert.Contains(t, s.Secrets(), code)

	_, m = post(s.DeviceAuthURL, creds)
	code = m["device_code"].(string)
	now = now.Add(11 * time.Minute)
	assert.Equal(t, "expired_token", poll())
}
