package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist/memlog"
)

const testKey = "test-api-key"

// daemon is assistantd's handler on memlog and a fake clock, with a fake
// provider behind it.
type daemon struct {
	t    *testing.T
	url  string
	clk  *fakeclock.Clock
	prov *oauthtest.Server
}

func newDaemon(t *testing.T) *daemon {
	var h http.Handler
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	d := &daemon{t: t, url: ts.URL, clk: fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), prov: oauthtest.New(t, oauthtest.Options{})}
	e, err := engine.Open(t.Context(), engine.Config{
		Log: memlog.New(), Clock: d.clk, LoopbackRedirectURL: ts.URL + engine.CallbackPath,
		Providers: []engine.Provider{{
			Name: "test", AuthURL: d.prov.AuthURL, TokenURL: d.prov.TokenURL, Issuer: d.prov.Issuer,
			ClientID: d.prov.ClientID, ClientSecret: d.prov.ClientSecret, AuthMethod: engine.AuthMethod(d.prov.AuthMethod),
		}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	h = newHandler(e, testKey)
	return d
}

// call sends a request to url (with the API key unless key is "") and
// decodes a JSON answer into a map.
func call(t *testing.T, method, url, key string) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(body, &out), string(body))
	}
	return resp.StatusCode, out, string(body)
}

func (d *daemon) start() (state, authURL string) {
	code, out, body := call(d.t, "POST", d.url+"/connect/test", testKey)
	require.Equal(d.t, http.StatusCreated, code, body)
	return out["state"].(string), out["auth_url"].(string)
}

func TestConnectCallbackToken(t *testing.T) {
	d := newDaemon(t)
	state, authURL := d.start()

	code, out, _ := call(t, "GET", d.url+"/connect/"+state+"?wait=0s", testKey)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "awaiting_callback", out["status"])
	assert.Equal(t, false, out["done"])

	// A prefetch of the redirect URI without code or error changes nothing.
	code, _, _ = call(t, "GET", d.url+engine.CallbackPath+"?state="+state, "")
	assert.Equal(t, http.StatusBadRequest, code)

	code, _, page := call(t, "GET", d.prov.Redirect(t, authURL), "")
	require.Equal(t, http.StatusOK, code, page)
	assert.Contains(t, page, "Your test account is connected")

	code, out, _ = call(t, "GET", d.url+"/connect/"+state, testKey)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "complete", out["status"])
	assert.Equal(t, true, out["done"])

	code, out, body := call(t, "GET", d.url+"/token/test", testKey)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, d.prov.Issued()[0], out["access_token"])
}

// A user's own OAuth app, given in the start route's body, is the client
// the code is exchanged with: the provider refuses the configured one's
// credentials for its code. A body the route cannot read starts nothing.
func TestConnectWithTheUsersOwnClient(t *testing.T) {
	d := newDaemon(t)
	d.prov.AddClient("users-app", "users-app-secret-5d1e")
	post := func(body string) (int, map[string]any) {
		req, err := http.NewRequest("POST", d.url+"/connect/test", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	code, out := post(`{"client_id": "users-app", "client_secret": "users-app-secret-5d1e"}`)
	require.Equal(t, http.StatusCreated, code, out)
	assert.Contains(t, out["auth_url"], "client_id=users-app")
	code, _, page := call(t, "GET", d.prov.Redirect(t, out["auth_url"].(string)), "")
	require.Equal(t, http.StatusOK, code, page)
	code, tok, body := call(t, "GET", d.url+"/token/test", testKey)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, d.prov.Issued()[0], tok["access_token"])

	code, out = post(`{"client_secret": "a-secret-without-an-id"}`)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.NotContains(t, out["error"], "a-secret-without-an-id", "the secret stays out of the error")
	code, out = post(`{"client_id": `)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, out["error"], "client_id")
}

func TestRoutesNeedTheAPIKey(t *testing.T) {
	d := newDaemon(t)
	for _, key := range []string{"", "wrong"} {
		code, out, _ := call(t, "POST", d.url+"/connect/test", key)
		assert.Equal(t, http.StatusUnauthorized, code)
		assert.Contains(t, out["error"], "ASSISTANTD_API_KEY")
		code, _, _ = call(t, "GET", d.url+"/token/test", key)
		assert.Equal(t, http.StatusUnauthorized, code)
	}
	code, out, _ := call(t, "GET", d.url+"/token/test", testKey)
	assert.Equal(t, http.StatusNotFound, code, "not connected yet")
	assert.NotEmpty(t, out["error"])
	code, _, _ = call(t, "POST", d.url+"/connect/nope", testKey)
	assert.Equal(t, http.StatusNotFound, code, "an unknown provider")
}

// A flow nobody completes expires at its deadline: the long-poll wakes
// with it, and the late redirect connects nothing.
func TestFlowExpires(t *testing.T) {
	d := newDaemon(t)
	state, authURL := d.start()
	redirect := d.prov.Redirect(t, authURL)
	d.clk.Advance(engine.DefaultTTL + time.Second)

	code, out, _ := call(t, "GET", d.url+"/connect/"+state+"?wait=1m", testKey)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "expired", out["status"])
	assert.Equal(t, true, out["done"])

	code, _, page := call(t, "GET", redirect, "")
	assert.Equal(t, http.StatusGone, code, page)
	code, _, _ = call(t, "GET", d.url+"/token/test", testKey)
	assert.Equal(t, http.StatusNotFound, code)
	assert.Zero(t, d.prov.Calls(), "the expired flow's code was never redeemed")
}
