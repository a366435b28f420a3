package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/mcptest"
)

// A connect by MCP server URL through the API: start by URL, the
// browser's redirect to the loopback listener, the token under the URL
// (one path segment, its slashes escaped), and the connection listed
// beside the configured providers.
func TestAPIConnectByMCPServerURL(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	f := mcptest.New(t)
	st := h.start(wire.StartRequest{Provider: f.Resource()})
	assert.Equal(t, f.Resource(), st.Provider)
	code := f.Authorize(st.AuthURL)
	r := h.browser("GET", "/oauth/callback?"+url.Values{"state": {st.State}, "code": {code}, "iss": {f.Srv.URL + "/as"}}.Encode(), nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "complete", h.status(st.State).Status)

	r = h.local("GET", "/v1/providers/"+url.PathEscape(f.Resource())+"/token", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var tok wire.TokenResponse
	require.NoError(t, json.Unmarshal(r.body, &tok))
	assert.Equal(t, "MCP-ACCESS-S3CR3T-1", tok.AccessToken)

	r = h.local("GET", "/v1/providers", nil)
	require.Equal(t, http.StatusOK, r.status)
	var ps wire.ProvidersResponse
	require.NoError(t, json.Unmarshal(r.body, &ps))
	require.Len(t, ps.Providers, 2)
	mcp := ps.Providers[1]
	assert.Equal(t, f.Resource(), mcp.Name)
	require.NotNil(t, mcp.MCP)
	assert.Equal(t, "dynamic", mcp.MCP.Registration)
	assert.Equal(t, f.Srv.URL+"/as", mcp.MCP.AuthServer)
	assert.NotContains(t, string(r.body), mcptest.DCRSecretPrefix)
	assert.NotContains(t, h.logs.String(), mcptest.DCRSecretPrefix)
}

func TestAPIRefusesAnMCPServerWhoseMetadataNamesAnotherResource(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	f := mcptest.New(t)
	f.PRMResource = "https://evil.example.com/mcp"
	r := h.local("POST", "/v1/flows", wire.StartRequest{Provider: f.Resource()})
	assert.Equal(t, http.StatusBadGateway, r.status)
	assert.Equal(t, wire.CodeMCPRefused, r.errCode())
	assert.Contains(t, r.errMessage(), "https://evil.example.com/mcp")
	assert.Zero(t, f.Registered())
}

func TestAPIRefusesAChallengeForAProvider(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := h.local("POST", "/v1/flows", wire.StartRequest{Provider: "fake", Challenge: `Bearer scope="x"`})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Contains(t, r.errMessage(), "MCP server URL")
	assert.Zero(t, h.counting.calls.Load(), "refused before the engine")
}
