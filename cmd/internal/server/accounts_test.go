package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/identity"
)

// Connecting a second account of a provider keeps the first: flowd asks
// the provider's userinfo URL (a fake GitHub API here) who signed in and
// stores each login's token on its own. A token or disconnect request
// that names no account gets the only one, and with several a clear
// error listing them.
func TestSeveralAccountsPerProvider(t *testing.T) {
	var who atomic.Value
	who.Store("octocat")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"login":"` + who.Load().(string) + `","id":583231}`))
	}))
	defer api.Close()
	h := newHarness(t, harnessOpts{identify: identity.New([]identity.Provider{{Name: "fake", UserInfoURL: api.URL + "/user"}}, identity.Options{})})
	connect := func() {
		t.Helper()
		st := h.start(wire.StartRequest{Provider: "fake"})
		_, code := h.provider.Authorize(t, st.AuthURL)
		page := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {code}}), nil)
		require.Equal(t, http.StatusOK, page.status, string(page.body))
		assert.Contains(t, string(page.body), "account "+who.Load().(string), "the page names the account")
	}
	token := func(query string) (int, wire.TokenResponse, string) {
		t.Helper()
		r := h.local("GET", "/v1/providers/fake/token"+query, nil)
		var tok wire.TokenResponse
		_ = json.Unmarshal(r.body, &tok)
		return r.status, tok, r.errCode() + " " + string(r.body)
	}

	connect()
	status, tok, _ := token("")
	require.Equal(t, http.StatusOK, status, "one account: it is the one")
	assert.Equal(t, "octocat", tok.Account)
	first := tok.AccessToken

	who.Store("hubot")
	connect()
	status, _, body := token("")
	assert.Equal(t, http.StatusConflict, status)
	assert.Contains(t, body, wire.CodeAccountRequired)
	assert.Contains(t, body, "hubot, octocat", "the error lists the accounts")
	assert.Contains(t, body, "--account")

	status, tok, _ = token("?account=octocat")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, first, tok.AccessToken, "the first account's token survived the second connect")
	status, tok, _ = token("?account=hubot")
	require.Equal(t, http.StatusOK, status)
	assert.NotEqual(t, first, tok.AccessToken)

	r := h.local("DELETE", "/v1/providers/fake/token", nil)
	assert.Equal(t, http.StatusConflict, r.status, "disconnect without an account removes nothing: %s", r.body)
	r = h.local("DELETE", "/v1/providers/fake/token?account=hubot", nil)
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, string(r.body), `"removed":true`)
	status, tok, _ = token("")
	require.Equal(t, http.StatusOK, status, "one account left")
	assert.Equal(t, "octocat", tok.Account)
}
