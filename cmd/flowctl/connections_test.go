package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/server"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// engineFlowd is flowd's real server and engine (memlog, a fake clock) on a
// unix socket, with one provider "gh" at a fake OAuth server, for the
// commands whose output comes from the engine's records.
type engineFlowd struct {
	socket string
	eng    *engine.Engine
	prov   *oauthtest.Server
	clk    *fakeclock.Clock
}

func newEngineFlowd(t *testing.T, revocation bool) *engineFlowd {
	t.Helper()
	r := &engineFlowd{prov: oauthtest.New(t, oauthtest.Options{}), clk: fakeclock.New(time.Now().UTC().Truncate(time.Second))}
	p := engine.Provider{Name: "gh", AuthURL: r.prov.AuthURL, TokenURL: r.prov.TokenURL, AuthMethod: engine.AuthMethod(r.prov.AuthMethod),
		ClientID: r.prov.ClientID, ClientSecret: r.prov.ClientSecret, Scopes: []string{"repo"}}
	if revocation {
		p.RevocationURL = r.prov.URL + oauthtest.RevokePath
	}
	var err error
	r.eng, err = engine.Open(context.Background(), engine.Config{Log: memlog.New(), Clock: r.clk, Providers: []engine.Provider{p}})
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	r.socket = filepath.Join(dir, "s")
	l, err := net.Listen("unix", r.socket)
	require.NoError(t, err)
	srv, err := server.New(server.Config{Engine: r.eng, Listen: "127.0.0.1:0", LoopbackRedirectURI: engine.DefaultLoopbackRedirectURL, ShutdownGrace: time.Second})
	require.NoError(t, err)
	go func() { _ = srv.ServeUnix(l) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		_ = r.eng.Close()
		_ = os.RemoveAll(dir)
	})
	return r
}

// connect completes a connect for gh without a browser.
func (r *engineFlowd) connect(t *testing.T) states.Flow {
	t.Helper()
	st, err := r.eng.Start(context.Background(), engine.StartRequest{Provider: "gh"})
	require.NoError(t, err)
	_, code := r.prov.Authorize(t, st.AuthURL)
	f, err := r.eng.Callback(context.Background(), engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	return f
}

// flowctl status lists connections: none, then a healthy one, then one
// whose refresh token the provider rejected (needs_reconnect with the
// provider's error, exit 1); flowctl token says to reconnect; inspect
// shows the refresh events and the connection; disconnect says the
// provider revoked the token.
func TestStatusListsConnections(t *testing.T) {
	r := newEngineFlowd(t, true)
	ctx := testCtx(t)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "status"))
	assert.Contains(t, c.stdout.String(), "Not connected to any provider.")

	f := r.connect(t)
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "status"), c.stderr.String())
	out := c.stdout.String()
	assert.Contains(t, out, "provider:      gh")
	assert.Contains(t, out, "health:        healthy")
	assert.Contains(t, out, "refresh token: held")
	assert.Contains(t, out, "scopes:        repo")
	assert.Contains(t, out, "last refresh:  never")

	r.clk.Advance(2 * time.Hour)
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "token", "gh"), c.stderr.String())
	r.clk.Advance(2 * time.Hour)
	r.prov.Refuse("invalid_grant", "The refresh token was revoked.")
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(ctx, r.socket, "token", "gh"))
	assert.Contains(t, c.stderr.String(), "invalid_grant")
	assert.Contains(t, c.stderr.String(), "reconnect: flowctl connect gh")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(ctx, r.socket, "status", "gh"), "a connection that needs a reconnect fails status")
	out = c.stdout.String()
	assert.Contains(t, out, "needs_reconnect: rejected invalid_grant (HTTP 400): The refresh token was revoked.")
	assert.Contains(t, out, "reconnect: flowctl connect gh")
	assert.Contains(t, out, "1 refreshes, 1 rotated")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(ctx, r.socket, "status", "gh", "--json"))
	m := oneJSON(t, c.stdout.String())
	conns := m["connections"].([]any)
	require.Len(t, conns, 1)
	assert.Equal(t, "needs_reconnect", conns[0].(map[string]any)["health"])

	c = newCLI("")
	c.run(ctx, r.socket, "inspect", f.ID)
	out = c.stdout.String()
	for _, ev := range []string{"refresh_started", "token_refreshed", "refresh_failed", "rotated=true", "error_code=invalid_grant"} {
		assert.Contains(t, out, ev)
	}
	assert.Contains(t, out, "connection: needs_reconnect")

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "list"))
	assert.Contains(t, c.stdout.String(), "exchanged (needs_reconnect)")

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "log", "export"))
	exported := c.stdout.String()
	assert.Contains(t, exported, `"event":"refresh_failed"`)
	for _, secret := range r.prov.Secrets() {
		assert.NotContains(t, exported, secret, "the export is safe to attach")
	}

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "disconnect", "gh"))
	assert.Contains(t, c.stdout.String(), "the provider revoked the token")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "status"))
	assert.Contains(t, c.stdout.String(), "Not connected")
}

// A provider without a revocation endpoint: disconnect says the token
// stays valid there.
func TestDisconnectWithoutRevocationSaysSo(t *testing.T) {
	r := newEngineFlowd(t, false)
	r.connect(t)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "disconnect", "gh"))
	assert.Contains(t, c.stdout.String(), "has no revocation endpoint")
}

// connectAs completes a connect for gh's account.
func (r *engineFlowd) connectAs(t *testing.T, account string) states.Flow {
	t.Helper()
	st, err := r.eng.Start(context.Background(), engine.StartRequest{Provider: "gh", Account: account})
	require.NoError(t, err)
	_, code := r.prov.Authorize(t, st.AuthURL)
	f, err := r.eng.Callback(context.Background(), engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	return f
}

// Against the real server and engine: two accounts of one provider are two
// connections; status, token and disconnect pick one with --account, and
// token without it names both.
func TestSeveralAccountsWithFlowctl(t *testing.T) {
	r := newEngineFlowd(t, false)
	r.connectAs(t, "octocat")
	r.connectAs(t, "hubot")
	issued := r.prov.Issued()

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "status", "gh"), c.stderr.String())
	assert.Contains(t, c.stdout.String(), "octocat")
	assert.Contains(t, c.stdout.String(), "hubot")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "status", "gh", "--account", "hubot"), c.stderr.String())
	assert.Contains(t, c.stdout.String(), "hubot")
	assert.NotContains(t, c.stdout.String(), "octocat")

	c = newCLI("")
	assert.Equal(t, ExitFailed, c.run(testCtx(t), r.socket, "token", "gh"))
	assert.Contains(t, c.stderr.String(), "gh has 2 connected accounts (hubot, octocat)")
	assert.Contains(t, c.stderr.String(), "--account")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "token", "gh", "--account", "octocat"), c.stderr.String())
	assert.Equal(t, issued[0]+"\n", c.stdout.String())

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "disconnect", "gh", "--account", "hubot"), c.stderr.String())
	assert.Contains(t, c.stdout.String(), "Disconnected gh (hubot)")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), r.socket, "token", "gh"), "one account left: %s", c.stderr.String())
	assert.Equal(t, issued[0]+"\n", c.stdout.String())
}

// flowctl token --force renews a token that has not expired (an API
// answered 401 to it); the refresh is recorded.
func TestTokenForce(t *testing.T) {
	r := newEngineFlowd(t, false)
	f := r.connect(t)
	ctx := testCtx(t)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "token", "gh"))
	assert.Equal(t, r.prov.Issued()[0]+"\n", c.stdout.String(), "valid: handed out as it is")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(ctx, r.socket, "token", "gh", "--force"), c.stderr.String())
	assert.Equal(t, r.prov.Issued()[2]+"\n", c.stdout.String(), "forced: a new access token")
	hist, err := r.eng.History(context.Background(), f.ID)
	require.NoError(t, err)
	assert.Equal(t, states.TokenRefreshed, hist[len(hist)-1].Event)
}
