package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/daemon"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
)

// One OIDC issuer that refuses connections at start-up stops only its own
// provider: flowd starts, the other provider connects, `flowctl providers`
// shows the issuer's provider unavailable with the reason, and connecting
// to it fails at once saying so. Once the issuer answers, the background
// retry adds the provider without a restart and it connects (issue 11,
// part 6). The retries run on a fake clock: no test time is spent waiting.
func TestUnreachableIssuerStopsOnlyItsProvider(t *testing.T) {
	gh := oauthtest.New(t, oauthtest.Options{})
	corp := oauthtest.New(t, oauthtest.Options{})
	// A loopback port nobody listens on: discovery there is refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	issuerAddr := l.Addr().String()
	require.NoError(t, l.Close())
	issuer := "http://" + issuerAddr

	clk := fakeclock.New(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
	config := fmt.Sprintf(`
[providers.gh]
auth_url = %q
token_url = %q
client_id = %q
client_secret = %q
token_endpoint_auth_method = %q

[providers.corp]
issuer = %q
client_id = %q
client_secret = %q
`, gh.AuthURL, gh.TokenURL, gh.ClientID, gh.ClientSecret, gh.AuthMethod, issuer, corp.ClientID, corp.ClientSecret)
	socket, _ := realFlowd(t, config, func(o *daemon.Options) {
		o.DiscoveryClock = clk
		o.DiscoveryBackoff = func(int) time.Duration { return time.Minute }
	})

	providers := func() map[string]wire.Provider {
		t.Helper()
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), socket, "providers", "--json"), c.stderr.String())
		var pr wire.ProvidersResponse
		require.NoError(t, json.Unmarshal([]byte(c.stdout.String()), &pr))
		out := map[string]wire.Provider{}
		for _, p := range pr.Providers {
			out[p.Name] = p
		}
		return out
	}
	ps := providers()
	assert.Equal(t, wire.ProviderAvailable, ps["gh"].Status)
	require.Equal(t, wire.ProviderUnavailable, ps["corp"].Status)
	require.NotNil(t, ps["corp"].Unavailable)
	assert.Contains(t, ps["corp"].Unavailable.Reason, issuerAddr+"/.well-known/openid-configuration")
	assert.Contains(t, ps["corp"].Unavailable.Reason, "connection refused")
	assert.Equal(t, 1, ps["corp"].Unavailable.Attempts)

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "providers"))
	assert.Regexp(t, `(?m)^corp\s+unavailable\s+`, c.stdout.String())
	assert.Regexp(t, `(?m)^gh\s+available\s+`, c.stdout.String())
	assert.Contains(t, c.stdout.String(), "corp is unavailable since")
	assert.Contains(t, c.stdout.String(), "connection refused")

	// connect fails at once, naming the issuer, the last error and the retrying.
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), socket, "connect", "corp", "--no-browser", "--json"))
	e := oneJSON(t, c.stdout.String())["error"].(map[string]any)
	assert.Equal(t, wire.CodeProviderUnavailable, e["code"])
	msg := e["message"].(string)
	for _, want := range []string{`provider "corp" is unavailable`, issuer, "connection refused", "flowd keeps retrying", "without a restart"} {
		assert.Contains(t, msg, want)
	}
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), socket, "token", "corp"))
	assert.Contains(t, c.stderr.String(), "flowd keeps retrying", "token names the same reason")

	// The other provider works meanwhile, end to end.
	connectThrough(t, socket, "gh", gh)

	// A second attempt, still refused: counted.
	waitFor(t, func() bool { return clk.Pending() > 0 }, "the retry's timer is armed")
	clk.Advance(time.Minute)
	waitFor(t, func() bool {
		return providers()["corp"].Unavailable != nil && providers()["corp"].Unavailable.Attempts == 2
	}, "the second attempt is recorded")

	// The issuer comes up on its address; the next retry finds it.
	ln, err := net.Listen("tcp", issuerAddr)
	require.NoError(t, err)
	// corp's metadata, served as the issuer's; without the iss promise, so
	// the hand-delivered callbacks below need not carry one.
	doc := corp.Metadata()
	doc["issuer"] = issuer
	delete(doc, "authorization_response_iss_parameter_supported")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	waitFor(t, func() bool { return clk.Pending() > 0 }, "the next retry's timer is armed")
	clk.Advance(time.Minute)
	waitFor(t, func() bool { return providers()["corp"].Status == wire.ProviderAvailable }, "corp becomes available")
	ps = providers()
	assert.Nil(t, ps["corp"].Unavailable)
	assert.Equal(t, corp.AuthURL, ps["corp"].AuthURL, "the discovered endpoints are shown")
	assert.Zero(t, clk.Pending(), "no retry is left once discovery succeeded")

	connectThrough(t, socket, "corp", corp)
}

// connectThrough connects provider through flowctl and flowd as a script
// would: connect --no-browser --json, the browser's part at the fake
// provider, the redirect to flowd's loopback listener, then flowctl wait.
func connectThrough(t *testing.T, socket, provider string, prov *oauthtest.Server) {
	t.Helper()
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "connect", provider, "--no-browser", "--json"), c.stderr.String())
	m := oneJSON(t, c.stdout.String())
	state, code := prov.Authorize(t, m["auth_url"].(string))
	resp, err := http.Get(m["redirect_uri"].(string) + "?" + url.Values{"state": {state}, "code": {code}}.Encode())
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "Connected", "the callback page")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "wait", state), c.stderr.String())
}

// waitFor polls cond every few milliseconds for up to 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}
