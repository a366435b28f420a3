package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// ownSecret is the secret of the user's own OAuth app; it must reach the
// provider and nothing else (assertNoSecretsLogged scans for it too).
const ownSecret = "own-app-secret-9d8c7b"

// POST /v1/flows with client_id, client_secret and token_auth connects as
// that client: the user authorizes it, and the provider, which binds the
// code to it, redeems the code from it. Its secret is in no record or
// export, and its id is.
func TestStartWithOwnClient(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.provider.AddClient("own-app", ownSecret)
	st := h.start(wire.StartRequest{Provider: "fake", ClientID: "own-app", ClientSecret: ownSecret, TokenAuth: "client_secret_post"})
	u, err := url.Parse(st.AuthURL)
	require.NoError(t, err)
	assert.Equal(t, "own-app", u.Query().Get("client_id"))

	state, code := h.provider.Authorize(t, st.AuthURL)
	page := h.browser("GET", callbackPath(url.Values{"state": {state}, "code": {code}}), nil)
	require.Equal(t, http.StatusOK, page.status, string(page.body))
	assert.Equal(t, "complete", h.status(st.State).Status)
	last := h.provider.LastRequest()
	assert.Equal(t, "own-app", last.Form.Get("client_id"))
	assert.Equal(t, ownSecret, last.Form.Get("client_secret"))

	export := h.local("GET", "/v1/log", nil)
	require.Equal(t, http.StatusOK, export.status)
	assert.NotContains(t, string(export.body), ownSecret)
	assert.Contains(t, string(export.body), `"registration":"per_start"`)
	assert.Contains(t, string(export.body), `"client_id":"own-app"`)

	conns := h.local("GET", "/v1/connections", nil)
	require.Equal(t, http.StatusOK, conns.status, string(conns.body))
	var cr wire.ConnectionsResponse
	require.NoError(t, json.Unmarshal(conns.body, &cr))
	require.Len(t, cr.Connections, 1)
	assert.Equal(t, "own-app", cr.Connections[0].ClientID, "GET /v1/connections names the app the token is refreshed with")
	assert.Equal(t, "per_start", cr.Connections[0].Registration)
}

// A start request whose own client cannot work is refused with
// bad_client (or too_large), names what to fix and not the secret, and
// records nothing.
func TestStartWithBadOwnClient(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for name, c := range map[string]struct {
		req      wire.StartRequest
		code     string
		contains string
	}{
		"secret without id":  {wire.StartRequest{Provider: "fake", ClientSecret: ownSecret}, wire.CodeBadClient, "need client_id"},
		"method without id":  {wire.StartRequest{Provider: "fake", TokenAuth: "none"}, wire.CodeBadClient, "need client_id"},
		"none with a secret": {wire.StartRequest{Provider: "fake", ClientID: "own-app", ClientSecret: ownSecret, TokenAuth: "none"}, wire.CodeBadClient, "drop the secret"},
		"unknown method":     {wire.StartRequest{Provider: "fake", ClientID: "own-app", ClientSecret: ownSecret, TokenAuth: "tls_client_auth"}, wire.CodeBadClient, "is not none"},
		"basic, no secret":   {wire.StartRequest{Provider: "fake", ClientID: "own-app", TokenAuth: "client_secret_basic"}, wire.CodeBadClient, "needs a client secret"},
		"mcp server":         {wire.StartRequest{Provider: "https://mcp.example.test/mcp", ClientID: "own-app", ClientSecret: ownSecret}, wire.CodeBadClient, "MCP server"},
		"huge secret":        {wire.StartRequest{Provider: "fake", ClientID: "own-app", ClientSecret: strings.Repeat("s", 5000)}, wire.CodeTooLarge, "client_secret is over"},
	} {
		t.Run(name, func(t *testing.T) {
			r := h.local("POST", "/v1/flows", c.req)
			assert.Equal(t, http.StatusBadRequest, r.status, string(r.body))
			assert.Equal(t, c.code, r.errCode())
			assert.Contains(t, r.errMessage(), c.contains)
			assert.NotContains(t, string(r.body), ownSecret)
		})
	}
	list := h.local("GET", "/v1/flows", nil)
	require.Equal(t, http.StatusOK, list.status)
	assert.JSONEq(t, `{"flows":[]}`, string(list.body), "nothing was recorded")
	assert.NotContains(t, h.logs.String(), ownSecret)
}
