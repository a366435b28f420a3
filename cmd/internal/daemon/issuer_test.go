package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// strictDaemon is flowd with one provider configured by issuer, a strict
// oauthtest server found by discovery (iss promised, auth methods
// advertised), on a bbolt log in dirs so a second daemon can reopen it.
func strictDaemon(t *testing.T, dirs daemonDirs, prov *oauthtest.Server, secret string) *Daemon {
	t.Helper()
	cfg := filepath.Join(filepath.Dir(dirs.state), "flowd.toml")
	body := fmt.Sprintf("[providers.idp]\nissuer = %q\nclient_id = %q\n", prov.Issuer, prov.ClientID)
	if secret != "" {
		body += fmt.Sprintf("client_secret = %q\n", secret)
	}
	require.NoError(t, os.WriteFile(cfg, []byte(body), 0o600))
	o := dirs.opts(nil)
	o.ConfigPath = cfg
	o.OpenLog = func(path string) (Log, error) { return persist.Open(path, persist.Options{Timeout: time.Second}) }
	d, err := Open(context.Background(), o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	var once bool
	t.Cleanup(func() {
		if !once {
			once = true
			cancel()
			<-served
		}
	})
	return d
}

// visit plays the browser landing on redirect (the daemon's own loopback
// callback) and returns the page's status and body.
func visit(t *testing.T, redirect string) (int, string) {
	t.Helper()
	resp, err := http.Get(redirect)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func withIss(t *testing.T, redirect, iss string, drop bool) string {
	t.Helper()
	u, err := url.Parse(redirect)
	require.NoError(t, err)
	q := u.Query()
	if drop {
		q.Del("iss")
	} else {
		q.Set("iss", iss)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Through the daemon's callback handler: a redirect with a wrong iss, or
// none from a server that promises one, never reaches the token endpoint;
// the flow ends issuer_mismatch and the page says the response came from
// the wrong server. The right iss connects a public client, whose auth
// method (none) discovery chose from the strict server's metadata.
func TestDaemonCallbackRefusesWrongOrMissingIss(t *testing.T) {
	prov := oauthtest.New(t, oauthtest.Options{Public: true})
	dirs := newDirs(t)
	d := strictDaemon(t, dirs, prov, "")
	p, err := d.Engine.Provider("idp")
	require.NoError(t, err)
	assert.Equal(t, engine.AuthMethodNone, p.AuthMethod, "chosen from token_endpoint_auth_methods_supported")
	assert.Equal(t, prov.Issuer, p.Issuer)
	assert.True(t, p.RequireIssuer, "authorization_response_iss_parameter_supported")
	ctx := context.Background()

	for name, mangle := range map[string]func(string) string{
		"wrong iss":   func(r string) string { return withIss(t, r, "https://evil.example", false) },
		"missing iss": func(r string) string { return withIss(t, r, "", true) },
	} {
		t.Run(name, func(t *testing.T) {
			st, err := d.Engine.Start(ctx, engine.StartRequest{Provider: "idp"})
			require.NoError(t, err)
			status, page := visit(t, mangle(prov.Redirect(t, st.AuthURL)))
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Contains(t, page, "Not connected: response from the wrong server")
			assert.Contains(t, page, "Its code was not used")
			assert.NotContains(t, page, "Connected</h1>")
			assert.Zero(t, prov.Calls(), "no token request reached the provider")
			f, err := d.Engine.Status(ctx, st.ID)
			require.NoError(t, err)
			assert.Equal(t, states.Error, f.State)
			assert.Equal(t, states.IssuerMismatch, f.Reason)
		})
	}

	st, err := d.Engine.Start(ctx, engine.StartRequest{Provider: "idp"})
	require.NoError(t, err)
	status, page := visit(t, prov.Redirect(t, st.AuthURL))
	assert.Equal(t, http.StatusOK, status, page)
	assert.Contains(t, page, "flowd connected your idp account")
	req := prov.LastRequest()
	assert.False(t, req.HasBasic, "a public client sends no Authorization header")
	assert.False(t, req.Form.Has("client_secret"))
}

// relay posts a callback to POST /v1/callbacks over the unix socket.
func relay(t *testing.T, sock string, req wire.CallbackRequest) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer c.CloseIdleConnections()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	resp, err := c.Post("http://flowd/v1/callbacks", "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(out)
}

// A flow started before a restart is checked after it: the daemon reopened
// on the same log still refuses a wrong iss, and the relay route (gateway,
// pasted URL) carries iss too.
func TestDaemonRestartKeepsIssCheck(t *testing.T) {
	prov := oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodPost}})
	dirs := newDirs(t)
	d := strictDaemon(t, dirs, prov, prov.ClientSecret)
	ctx := context.Background()
	p, err := d.Engine.Provider("idp")
	require.NoError(t, err)
	assert.Equal(t, engine.AuthMethodClientSecretPost, p.AuthMethod, "the only method advertised")
	st1, err := d.Engine.Start(ctx, engine.StartRequest{Provider: "idp", Account: "a"})
	require.NoError(t, err)
	st2, err := d.Engine.Start(ctx, engine.StartRequest{Provider: "idp", Account: "b"})
	require.NoError(t, err)
	r1, r2 := prov.Redirect(t, st1.AuthURL), prov.Redirect(t, st2.AuthURL)
	require.NoError(t, d.Close())

	d = strictDaemon(t, dirs, prov, prov.ClientSecret)
	// Listening on port 0, the new daemon has another port than the
	// redirect the provider built: the browser reaches it there.
	u1, err := url.Parse(withIss(t, r1, "https://evil.example", false))
	require.NoError(t, err)
	u1.Host = d.Addr
	status, page := visit(t, u1.String())
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, page, "wrong server")
	f, err := d.Engine.Status(ctx, st1.ID)
	require.NoError(t, err)
	assert.Equal(t, states.IssuerMismatch, f.Reason)
	assert.Zero(t, prov.Calls())

	// The relay route takes iss as a field (a gateway) and inside a pasted
	// URL (flowctl paste): a wrong one is refused, the right one connects.
	u, err := url.Parse(r2)
	require.NoError(t, err)
	q := u.Query()
	status, body := relay(t, dirs.sock, wire.CallbackRequest{State: q.Get("state"), Code: q.Get("code"), Iss: "https://evil.example"})
	assert.Equal(t, http.StatusOK, status, body)
	assert.Contains(t, body, `"reason":"issuer_mismatch"`)
	assert.Zero(t, prov.Calls())

	st3, err := d.Engine.Start(ctx, engine.StartRequest{Provider: "idp", Account: "c"})
	require.NoError(t, err)
	status, body = relay(t, dirs.sock, wire.CallbackRequest{URL: prov.Redirect(t, st3.AuthURL)})
	assert.Equal(t, http.StatusOK, status, body)
	assert.Contains(t, body, `"outcome":"connected"`)
	f, err = d.Engine.Status(ctx, st3.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State, f.Message)
	assert.Equal(t, 1, prov.Calls())
}
