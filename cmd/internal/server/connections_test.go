package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine/fakeclock"
)

// GET /v1/connections lists what the user holds: provider, scopes,
// expiry, refresh token held, health. After the provider rejects the
// refresh token, the token route says to reconnect (flowd's advice, not
// the engine's) and the connection needs a reconnect; the export holds no
// token.
func TestConnectionsRoute(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	h := newHarness(t, harnessOpts{clock: clk})
	empty := h.local("GET", "/v1/connections", nil)
	require.Equal(t, http.StatusOK, empty.status, string(empty.body))
	assert.JSONEq(t, `{"connections":[]}`, string(empty.body))

	st := h.start(wire.StartRequest{Provider: "fake"})
	page := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	require.Equal(t, http.StatusOK, page.status, string(page.body))

	var cr wire.ConnectionsResponse
	resp := h.local("GET", "/v1/connections?provider=fake", nil)
	require.Equal(t, http.StatusOK, resp.status, string(resp.body))
	require.NoError(t, json.Unmarshal(resp.body, &cr))
	require.Len(t, cr.Connections, 1)
	c := cr.Connections[0]
	assert.Equal(t, "fake", c.Provider)
	assert.Equal(t, st.State, c.Flow)
	assert.Equal(t, "healthy", c.Health)
	assert.True(t, c.HasRefreshToken)
	require.NotNil(t, c.ExpiresAt)
	assert.Equal(t, time.Hour, c.ExpiresAt.Sub(clk.Now()))

	clk.Advance(2 * time.Hour)
	h.provider.Refuse("invalid_grant", "revoked")
	tr := h.local("GET", "/v1/providers/fake/token", nil)
	assert.Equal(t, http.StatusBadGateway, tr.status)
	assert.Equal(t, wire.CodeProviderError, tr.errCode())
	assert.Contains(t, tr.errMessage(), "invalid_grant")
	assert.Contains(t, tr.errMessage(), "reconnect: flowctl connect fake")

	resp = h.local("GET", "/v1/connections", nil)
	require.NoError(t, json.Unmarshal(resp.body, &cr))
	require.Len(t, cr.Connections, 1)
	assert.Equal(t, "needs_reconnect", cr.Connections[0].Health)
	assert.Equal(t, "invalid_grant", cr.Connections[0].ErrorCode)
	require.NotNil(t, cr.Connections[0].FailingSince)

	unknown := h.local("GET", "/v1/connections?provider=nope", nil)
	assert.Equal(t, http.StatusNotFound, unknown.status)
	assert.Equal(t, wire.CodeUnknownProvider, unknown.errCode())

	export := h.local("GET", "/v1/log", nil)
	require.Equal(t, http.StatusOK, export.status)
	assert.Contains(t, string(export.body), `"event":"refresh_failed"`)
	for _, secret := range h.provider.Secrets() {
		assert.NotContains(t, string(export.body), secret)
		assert.NotContains(t, string(resp.body), secret)
	}
}
