package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/daemon"
	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// flowd on the real bbolt log: connect through the loopback callback, stop
// flowd, start it again on the same state directory, and find the flow
// and its token still there.
func TestConnectSurvivesRestart(t *testing.T) {
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Form.Get("code") != "the-code" || r.Form.Get("code_verifier") == "" {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":"invalid_grant"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-xyz","token_type":"bearer","expires_in":3600}`)
	}))
	defer tokenSrv.Close()

	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "flowd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"[providers.fake]\nauth_url = %q\ntoken_url = %q\nclient_id = \"cid\"\nclient_secret = \"cs\"\n",
		tokenSrv.URL+"/auth", tokenSrv.URL+"/token")), 0o600))
	sock := filepath.Join(dir, "s")
	opts := daemon.Options{Flags: daemon.Flags{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Socket: sock, Listen: "127.0.0.1:0"}}

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	api := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(path string, out any) int {
		r, err := api.Get("http://flowd" + path)
		require.NoError(t, err)
		defer r.Body.Close()
		require.NoError(t, json.NewDecoder(r.Body).Decode(out))
		return r.StatusCode
	}
	run := func() (*daemon.Daemon, func()) {
		d, err := daemon.Open(context.Background(), opts)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Serve(ctx) }()
		return d, func() { tr.CloseIdleConnections(); cancel(); require.NoError(t, <-done) }
	}

	d, stop := run()
	r, err := api.Post("http://flowd/v1/flows", "application/json", strings.NewReader(`{"provider":"fake"}`))
	require.NoError(t, err)
	var st wire.StartResponse
	require.NoError(t, json.NewDecoder(r.Body).Decode(&st))
	r.Body.Close()
	require.Equal(t, http.StatusCreated, r.StatusCode)
	assert.Equal(t, "http://"+d.Addr+"/oauth/callback", st.RedirectURI)

	page, err := http.Get(st.RedirectURI + "?" + url.Values{"state": {st.State}, "code": {"the-code"}}.Encode())
	require.NoError(t, err)
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	assert.Contains(t, string(body), "<h1>Connected</h1>")
	stop()

	_, stop = run()
	defer stop()
	var f wire.Flow
	require.Equal(t, http.StatusOK, get("/v1/flows/"+st.State, &f))
	assert.Equal(t, "complete", f.Status)
	var tok wire.TokenResponse
	require.Equal(t, http.StatusOK, get("/v1/providers/fake/token", &tok))
	assert.Equal(t, "at-xyz", tok.AccessToken)

	db, err := os.ReadFile(filepath.Join(dir, "state", "flowd.db"))
	require.NoError(t, err)
	for _, secret := range []string{"the-code", "at-xyz"} {
		assert.NotContains(t, string(db), secret, "a secret is in the database file in the clear")
	}
}
