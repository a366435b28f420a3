package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// serve runs h on a fresh unix socket and returns a client for it.
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := New(sock)
	t.Cleanup(c.Close)
	return c
}

func TestAPIErrorsCarryFlowdsCodeAndMessage(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"unknown_state","message":"no flow has this state; list flows with: flowctl list"}}`))
	})
	_, err := c.Status(context.Background(), "x", 0)
	require.Error(t, err)
	assert.True(t, HasCode(err, wire.CodeUnknownState))
	assert.True(t, IsNotFound(err))
	assert.Equal(t, "no flow has this state; list flows with: flowctl list", err.Error())
}

func TestNonFlowdAnswerIsShownBounded(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("x", 500), http.StatusBadGateway)
	})
	_, err := c.Providers(context.Background())
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusBadGateway, ae.Status)
	assert.Empty(t, ae.Code)
	assert.LessOrEqual(t, len(ae.Message), 210)
}

func TestStatusWaitIsCappedAndOutlivesTheDaemonsWait(t *testing.T) {
	var got string
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Query().Get("wait")
		w.Write([]byte(`{"state":"s","status":"awaiting_callback"}`))
	})
	f, err := c.Status(context.Background(), "s", time.Hour)
	require.NoError(t, err)
	assert.Equal(t, "s", f.State)
	assert.Equal(t, wire.MaxWait.String(), got)
}

func TestUnreachable(t *testing.T) {
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "none.sock")
	_, err = New(sock).List(context.Background(), nil, "")
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, "could not reach flowd at "+sock+": no such file or directory. Is flowd running? Start it with: flowd", err.Error())

	long := "/tmp/" + strings.Repeat("d", 120) + "/flowd.sock"
	_, err = New(long).List(context.Background(), nil, "")
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, err.Error(), "longer than the 107 a unix socket path may have. Is flowd running?")
}

func TestCallersCancellationIsNotUnreachable(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.Status(ctx, "s", time.Minute)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	var ue *UnreachableError
	assert.False(t, errors.As(err, &ue))
}

// An MCP server URL names a provider as one path segment: its slashes are
// escaped once, and flowd's mux hands the URL back whole.
func TestMCPServerURLIsOnePathSegment(t *testing.T) {
	var got, raw string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/providers/{provider}/token", func(w http.ResponseWriter, r *http.Request) {
		got, raw = r.PathValue("provider"), r.URL.EscapedPath()
		_, _ = w.Write([]byte(`{"provider":"x","access_token":"t"}`))
	})
	c := serve(t, mux.ServeHTTP)
	_, err := c.Token(context.Background(), "https://mcp.example.com/v1/mcp", "")
	require.NoError(t, err)
	assert.Equal(t, "https://mcp.example.com/v1/mcp", got)
	assert.Equal(t, "/v1/providers/https:%2F%2Fmcp.example.com%2Fv1%2Fmcp/token", raw)
}
