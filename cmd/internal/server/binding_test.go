package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// The start answer carries a launch link on the loopback listener; a
// browser that opens it gets the binding cookie and goes on to the
// provider. A callback without the cookie (an error or a code) is refused
// with a page, changes nothing and is counted; the user's paste on the
// socket and the gateway's relay, which their channels authenticate, are
// taken without it.
func TestLaunchLinkBindsAndOnlyAuthenticatedChannelsSkipTheCookie(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	require.True(t, strings.HasPrefix(st.LaunchURL, "http://"+h.tcp+"/oauth/launch?t="), st.LaunchURL)
	assert.NotContains(t, st.LaunchURL, st.State)

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	victim := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := victim.Get(st.LaunchURL)
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	assert.Equal(t, st.AuthURL, r.Header.Get("Location"))
	assert.True(t, h.status(st.State).BrowserBound)
	lb, _ := url.Parse("http://" + h.tcp + "/oauth/callback")
	cookies := jar.Cookies(lb)
	require.Len(t, cookies, 1)
	t.Cleanup(func() {
		assert.NotContains(t, h.logs.String(), cookies[0].Value, "the binding secret is never logged")
		assert.NotContains(t, string(h.local("GET", "/v1/log", nil).body), cookies[0].Value, "nor exported")
	})

	forged := h.browser("GET", "/oauth/callback?"+url.Values{"state": {st.State}, "error": {"access_denied"}}.Encode(), nil)
	assert.Equal(t, http.StatusForbidden, forged.status)
	assert.Contains(t, string(forged.body), "only that browser may finish it")
	injected := h.browser("GET", "/oauth/callback?"+url.Values{"state": {st.State}, "code": {goodCode}}.Encode(), nil)
	assert.Equal(t, http.StatusForbidden, injected.status)
	f := h.status(st.State)
	assert.Equal(t, "awaiting_callback", f.Status)
	assert.Equal(t, 2, f.IgnoredCallbacks)
	assert.Zero(t, h.provider.Uses(goodCode))

	m := h.local("GET", "/metrics", nil)
	assert.Contains(t, string(m.body), `flowd_callbacks_refused_unbound_total{reason="binding_missing"} 2`)
	assert.Contains(t, string(m.body), `flowd_browser_requests_total{outcome="launched"} 1`)

	// The user pastes the address at flowctl's prompt: the socket's peer
	// uid vouches for it.
	paste := h.local("POST", "/v1/callbacks", wire.CallbackRequest{URL: "http://" + h.tcp + "/oauth/callback?state=" + url.QueryEscape(st.State) + "&code=" + goodCode})
	require.Equal(t, http.StatusOK, paste.status, string(paste.body))
	var out wire.CallbackResponse
	require.NoError(t, json.Unmarshal(paste.body, &out))
	assert.Equal(t, wire.OutcomeConnected, out.Outcome)

	// A gateway flow opened through its launch link: the relay with the
	// service token is taken without the cookie.
	gw := h.start(wire.StartRequest{Provider: "fake", Account: "gw", Transport: "gateway"})
	require.NotEmpty(t, gw.LaunchURL)
	r, err = victim.Get(gw.LaunchURL)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	_, code := h.provider.Authorize(t, gw.AuthURL)
	relay := h.gateway("POST", "/v1/callbacks", wire.CallbackRequest{State: gw.State, Code: code})
	require.Equal(t, http.StatusOK, relay.status, string(relay.body))
	require.NoError(t, json.Unmarshal(relay.body, &out))
	assert.Equal(t, wire.OutcomeConnected, out.Outcome, string(relay.body))
}
