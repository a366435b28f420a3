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

	"github.com/flowdhq/flowd/internal/oauthtest"
)

const redirect = "http://127.0.0.1:8085/oauth/callback"

// client is what an OAuth client (flowd's engine) is configured with.
func client(s *oauthtest.Server) *oauth2.Config {
	style := oauth2.AuthStyleInParams
	if s.AuthMethod == oauthtest.MethodBasic {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: style}}
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

// The metadata advertises iss and the auth methods in force, and every
// redirect, success or error, carries iss (RFC 9207).
func TestMetadataAndIssOnEveryRedirect(t *testing.T) {
	s := oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodPost, oauthtest.MethodBasic}})
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, err := http.Get(s.URL + path)
		require.NoError(t, err)
		var md map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&md))
		resp.Body.Close()
		assert.Equal(t, s.URL, md["issuer"], path)
		assert.Equal(t, true, md["authorization_response_iss_parameter_supported"], path)
		assert.Equal(t, []any{"client_secret_post", "client_secret_basic"}, md["token_endpoint_auth_methods_supported"], path)
		assert.Equal(t, s.TokenURL, md["token_endpoint"], path)
	}
	assert.Zero(t, s.Calls(), "metadata is not the token endpoint")

	c := client(s)
	authURL := c.AuthCodeURL("st-1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	u, err := url.Parse(s.Redirect(t, authURL))
	require.NoError(t, err)
	assert.Equal(t, redirect, u.Scheme+"://"+u.Host+u.Path)
	assert.Equal(t, s.Issuer, u.Query().Get("iss"))
	assert.Equal(t, "st-1", u.Query().Get("state"))
	assert.True(t, strings.HasPrefix(u.Query().Get("code"), oauthtest.CodePrefix))

	u, err = url.Parse(s.Deny(t, authURL, "access_denied", "no"))
	require.NoError(t, err)
	assert.Equal(t, s.Issuer, u.Query().Get("iss"))
	assert.Equal(t, "access_denied", u.Query().Get("error"))
	assert.Equal(t, "st-1", u.Query().Get("state"))
	assert.False(t, u.Query().Has("code"))
}

// The token endpoint takes only the methods it advertises, one per
// request, and never an empty secret (RFC 6749 2.3, 5.2).
func TestClientAuthMethodsAreStrict(t *testing.T) {
	ctx := context.Background()
	exchange := func(s *oauthtest.Server, mutate func(c *oauth2.Config)) error {
		c := client(s)
		mutate(c)
		code, verifier := authorize(t, s, c)
		_, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		return err
	}
	keep := func(*oauth2.Config) {}

	public := oauthtest.New(t, oauthtest.Options{Public: true})
	assert.Equal(t, oauthtest.MethodNone, public.AuthMethod)
	assert.Empty(t, public.ClientSecret)
	require.NoError(t, exchange(public, keep), "a public client sends client_id alone")
	last := public.LastRequest()
	assert.False(t, last.HasBasic)
	assert.False(t, last.Form.Has("client_secret"))
	assert.Equal(t, public.ClientID, last.Form.Get("client_id"))

	err := exchange(public, func(c *oauth2.Config) { c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader })
	assert.Equal(t, "invalid_client", oauthErr(t, err), "Basic with an empty password is refused")
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, http.StatusUnauthorized, re.Response.StatusCode)

	basic := oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodBasic, oauthtest.MethodNone}})
	err = exchange(basic, func(c *oauth2.Config) { c.ClientSecret = "" })
	assert.Equal(t, "invalid_client", oauthErr(t, err), "Basic with an empty secret, even where none is advertised")
	err = exchange(basic, func(c *oauth2.Config) {
		c.ClientSecret = ""
		c.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	})
	assert.Equal(t, "invalid_client", oauthErr(t, err), "a confidential client must authenticate")
	err = exchange(basic, func(c *oauth2.Config) { c.Endpoint.AuthStyle = oauth2.AuthStyleInParams })
	assert.Equal(t, "invalid_client", oauthErr(t, err), "client_secret_post is not advertised")
	require.NoError(t, exchange(basic, keep))

	post := oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodPost}})
	err = exchange(post, func(c *oauth2.Config) { c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader })
	assert.Equal(t, "invalid_client", oauthErr(t, err), "client_secret_basic is not advertised")
	require.NoError(t, exchange(post, keep))
}

// A code presented after it was redeemed is refused and revokes the
// tokens issued for it (RFC 6749 4.1.2); access tokens expire exactly on
// time (no tolerance); a reused refresh token is refused and revokes its
// grant (RFC 9700 4.14.2).
func TestReuseRevokesAndExpiryIsExact(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s := oauthtest.New(t, oauthtest.Options{Now: func() time.Time { return now }})
	s.SetExpiresIn(1)
	c := client(s)
	code, verifier := authorize(t, s, c)
	tok, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	assert.True(t, s.Active(tok.AccessToken))
	now = now.Add(time.Second - time.Nanosecond)
	assert.True(t, s.Active(tok.AccessToken))
	now = now.Add(time.Nanosecond)
	assert.False(t, s.Active(tok.AccessToken), "expired one second after issue, to the nanosecond")
	req, _ := http.NewRequest("GET", s.URL+"/resource", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "invalid_token")

	// Rotation: the first refresh works, its new tokens are active.
	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err := c.TokenSource(ctx, tok).Token()
	require.NoError(t, err)
	assert.True(t, s.Active(fresh.AccessToken))
	// The code again: refused, and every token of the grant revoked.
	_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_grant", oauthErr(t, err))
	assert.False(t, s.Active(fresh.AccessToken), "tokens of a code presented twice are revoked")
	fresh.Expiry = time.Now().Add(-time.Minute)
	_, err = c.TokenSource(ctx, fresh).Token()
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "the grant's refresh token is revoked too")

	// A reused refresh token revokes the tokens rotated from it.
	s.SetExpiresIn(3600)
	code, verifier = authorize(t, s, c)
	tok, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err = c.TokenSource(ctx, tok).Token()
	require.NoError(t, err)
	_, err = c.TokenSource(ctx, tok).Token()
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "a rotated refresh token is good once")
	assert.False(t, s.Active(fresh.AccessToken), "reuse revokes what the good refresh token gave")
	fresh.Expiry = time.Now().Add(-time.Minute)
	_, err = c.TokenSource(ctx, fresh).Token()
	assert.Equal(t, "invalid_grant", oauthErr(t, err))
}

// A second client's codes and refresh tokens are its own: the default
// client presenting them is refused (RFC 6749 sections 4.1.3 and 6), and
// the code stays good for the client it was issued to.
func TestAddedClientOwnsItsGrants(t *testing.T) {
	ctx := context.Background()
	s := oauthtest.New(t, oauthtest.Options{})
	s.AddClient("second-app", "SECOND-SECRET-x")
	def := client(s)
	own := client(s)
	own.ClientID, own.ClientSecret = "second-app", "SECOND-SECRET-x"

	code, verifier := authorize(t, s, own)
	_, err := def.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "another client's code")
	tok, err := own.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	require.NoError(t, err, "refused from another client, the code is still its own client's")

	expired := &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Unix(1, 0)}
	_, err = def.TokenSource(ctx, expired).Token()
	assert.Equal(t, "invalid_grant", oauthErr(t, err), "another client's refresh token")
	_, err = own.TokenSource(ctx, expired).Token()
	require.NoError(t, err)

	wrong := client(s)
	wrong.ClientID, wrong.ClientSecret = "second-app", oauthtest.DefaultClientSecret
	code, verifier = authorize(t, s, wrong)
	_, err = wrong.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	assert.Equal(t, "invalid_client", oauthErr(t, err), "each client has its own secret")
	assert.Contains(t, s.Secrets(), "SECOND-SECRET-x", "a leak scan knows the added secret")
}
