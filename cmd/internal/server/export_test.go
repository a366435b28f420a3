package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

// GET /v1/log streams the log as JSON lines that decode and replay, carry
// no code, and honour flow= and since=.
func TestExportRoute(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	done := h.start(wire.StartRequest{Provider: "fake"})
	page := h.browser("GET", callbackPath(url.Values{"state": {done.State}, "code": {goodCode}}), nil)
	require.Equal(t, http.StatusOK, page.status)
	live := h.start(wire.StartRequest{Provider: "fake", Account: "bob"})

	all := h.local("GET", "/v1/log", nil)
	require.Equal(t, http.StatusOK, all.status, string(all.body))
	assert.Equal(t, "application/x-ndjson", all.header.Get("Content-Type"))
	assert.NotContains(t, string(all.body), goodCode)
	var recs []states.Record
	for _, line := range strings.Split(strings.TrimSpace(string(all.body)), "\n") {
		rec, err := states.Decode([]byte(line))
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	flows, err := states.Replay(recs, nil)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, flows[done.State].State)
	assert.Equal(t, states.AwaitingCallback, flows[live.State].State)

	one := h.local("GET", "/v1/log?flow="+live.State, nil)
	require.Equal(t, http.StatusOK, one.status)
	assert.Equal(t, 2, strings.Count(string(one.body), "\n"))

	future := h.local("GET", "/v1/log?since="+url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), nil)
	require.Equal(t, http.StatusOK, future.status)
	assert.Empty(t, future.body)

	bad := h.local("GET", "/v1/log?since=yesterday", nil)
	assert.Equal(t, http.StatusBadRequest, bad.status)
	assert.Contains(t, bad.errMessage(), "RFC 3339")

	unknown := h.local("GET", "/v1/log?flow=nope", nil)
	assert.Equal(t, http.StatusNotFound, unknown.status)
}
