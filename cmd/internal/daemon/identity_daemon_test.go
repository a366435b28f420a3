package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/persist/memlog"
)

// The github preset names the account by GitHub's user API; flowd wires
// it from the config: here the preset's endpoints and userinfo_url point
// at loopback fakes, and the connect's account is the fake API's login.
func TestDaemonNamesGitHubAccountFromUserAPI(t *testing.T) {
	p, err := config.Parse("f.toml", []byte("[providers.github]\nclient_id = \"x\"\nclient_secret = \"s\"\n"), nil)
	require.NoError(t, err)
	assert.Equal(t, "https://api.github.com/user", p.Providers[0].UserInfoURL, "the preset's user API")

	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"gho_0CT0CAT","token_type":"bearer","scope":"read:user"}`)
	}))
	defer tokens.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer gho_0CT0CAT" || r.Header.Get("User-Agent") == "" {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"login":"octocat","id":583231,"email":null}`)
	}))
	defer api.Close()

	dir, err := os.MkdirTemp("", "fdi")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "flowd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"[providers.github]\nauth_url = \"https://github.example.test/authorize\"\ntoken_url = %q\nuserinfo_url = %q\nclient_id = \"cid\"\nclient_secret = %q\n",
		tokens.URL+"/token", api.URL+"/user", clientSecret)), 0o600))
	d, err := Open(context.Background(), Options{
		Flags:         Flags{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "s"), Listen: "127.0.0.1:0"},
		OpenLog:       func(string) (Log, error) { return memLogCloser{memlog.New()}, nil },
		ShutdownGrace: 5 * time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.SocketPath)
	}}
	defer func() {
		tr.CloseIdleConnections()
		cancel()
		require.NoError(t, <-served)
	}()
	cl := &http.Client{Transport: tr, Timeout: time.Minute}
	call := func(method, path, body string, out any) int {
		t.Helper()
		req, err := http.NewRequest(method, "http://flowd"+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := cl.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
		return resp.StatusCode
	}

	var st wire.StartResponse
	require.Equal(t, http.StatusCreated, call("POST", "/v1/flows", `{"provider":"github"}`, &st))
	var cb wire.CallbackResponse
	require.Equal(t, http.StatusOK, call("POST", "/v1/callbacks", fmt.Sprintf(`{"state":%q,"code":"c0de"}`, st.State), &cb))
	assert.Equal(t, wire.OutcomeConnected, cb.Outcome, "%+v", cb)
	assert.Equal(t, "octocat", cb.Flow.Account)
	assert.Equal(t, "583231", cb.Flow.Subject)
	var tok wire.TokenResponse
	require.Equal(t, http.StatusOK, call("GET", "/v1/providers/github/token", "", &tok))
	assert.Equal(t, "octocat", tok.Account)
	assert.Equal(t, "gho_0CT0CAT", tok.AccessToken)
}
