package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine/fakeclock"
)

func callbackPath(q url.Values) string { return "/oauth/callback?" + q.Encode() }

// The loopback transport end to end: flowctl starts over the socket and
// long-polls; the browser's redirect lands on the TCP listener; the wait
// returns complete and the token is there.
func TestConnectLoopback(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	assert.Equal(t, "http://"+h.tcp+"/oauth/callback", st.RedirectURI)
	assert.Equal(t, "loopback", st.Transport)
	u, err := url.Parse(st.AuthURL)
	require.NoError(t, err)
	assert.Equal(t, st.State, u.Query().Get("state"))

	waited := make(chan resp, 1)
	go func() { waited <- h.local("GET", "/v1/flows/"+st.State+"?wait=1m", nil) }()

	page := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	assert.Equal(t, http.StatusOK, page.status)
	assert.Contains(t, string(page.body), "<h1>Connected</h1>")
	assert.Equal(t, "no-referrer", page.header.Get("Referrer-Policy"), "the callback URL carries the code and must not leak as a referrer")
	assert.Contains(t, page.header.Get("Content-Type"), "text/html")

	var r resp
	select {
	case r = <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll did not return after the flow completed")
	}
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var f wire.Flow
	require.NoError(t, json.Unmarshal(r.body, &f))
	assert.Equal(t, "complete", f.Status)
	assert.True(t, f.Terminal)
	assert.Equal(t, "exchanged", f.Reason)
	assert.True(t, f.TokenStored)

	tr := h.local("GET", "/v1/providers/fake/token", nil)
	require.Equal(t, http.StatusOK, tr.status, string(tr.body))
	var tok wire.TokenResponse
	require.NoError(t, json.Unmarshal(tr.body, &tok))
	assert.Equal(t, h.provider.Issued()[0], tok.AccessToken)
	assert.NotContains(t, string(tr.body), h.provider.Issued()[1], "the refresh token never leaves flowd")

	// The same redirect again (a reload): already used, never "connected".
	again := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	assert.Equal(t, http.StatusConflict, again.status)
	assert.Contains(t, string(again.body), "Already used")
	assert.NotContains(t, string(again.body), "<h1>Connected")
	assert.Equal(t, 1, h.provider.Calls(), "a code is redeemed once")

	hist := h.local("GET", "/v1/flows/"+st.State+"/history", nil)
	require.Equal(t, http.StatusOK, hist.status)
	var hr wire.HistoryResponse
	require.NoError(t, json.Unmarshal(hist.body, &hr))
	assert.GreaterOrEqual(t, len(hr.Records), 4)
	assert.NotContains(t, string(hist.body), goodCode)

	list := h.local("GET", "/v1/flows?status=complete&provider=fake", nil)
	require.Equal(t, http.StatusOK, list.status)
	var lr wire.ListResponse
	require.NoError(t, json.Unmarshal(list.body, &lr))
	require.Len(t, lr.Flows, 1)
	assert.Equal(t, st.State, lr.Flows[0].State)

	dis := h.local("DELETE", "/v1/providers/fake/token", nil)
	require.Equal(t, http.StatusOK, dis.status, string(dis.body))
	assert.JSONEq(t, `{"provider":"fake","removed":true,"revocation":"unsupported"}`, string(dis.body), "the fake provider has no revocation endpoint, and the answer says so")
	gone := h.local("GET", "/v1/providers/fake/token", nil)
	assert.Equal(t, http.StatusNotFound, gone.status)
	assert.Equal(t, wire.CodeNotConnected, gone.errCode())
	assert.Contains(t, gone.errMessage(), "flowctl connect fake")
}

// The gateway transport: the gateway relays {state, code} with its
// service token and may read the flow's status, nothing else.
func TestGatewayRelay(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake", Transport: "gateway"})
	assert.Equal(t, "https://gw.example.test/oauth/callback", st.RedirectURI)

	r := h.gateway("GET", "/v1/flows/"+st.State, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))

	r = h.gateway("POST", "/v1/callbacks", wire.CallbackRequest{State: st.State, Code: goodCode})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var cr wire.CallbackResponse
	require.NoError(t, json.Unmarshal(r.body, &cr))
	assert.Equal(t, wire.OutcomeConnected, cr.Outcome)
	assert.Equal(t, "complete", cr.Flow.Status)

	r = h.gateway("POST", "/v1/callbacks", wire.CallbackRequest{State: st.State, Code: goodCode})
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, wire.CodeFlowFinished, r.errCode())

	r = h.gateway("POST", "/v1/flows", wire.StartRequest{Provider: "fake"})
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, wire.CodeForbidden, r.errCode())

	wrong := h.do(h.web, "http://"+h.tcp, "GET", "/v1/flows/"+st.State, nil, map[string]string{"Authorization": "Bearer nope"})
	assert.Equal(t, http.StatusUnauthorized, wrong.status)
	assert.Equal(t, wire.CodeUnauthorized, wrong.errCode())
}

// The manual transport: the user pastes the URL the browser ended on.
func TestManualPastedURL(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake", Transport: "manual"})
	pasted := st.RedirectURI + "?" + url.Values{"state": {st.State}, "code": {goodCode}}.Encode()
	r := h.local("POST", "/v1/callbacks", wire.CallbackRequest{URL: pasted})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var cr wire.CallbackResponse
	require.NoError(t, json.Unmarshal(r.body, &cr))
	assert.Equal(t, wire.OutcomeConnected, cr.Outcome)

	r = h.local("POST", "/v1/callbacks", wire.CallbackRequest{URL: "http://127.0.0.1:8085/oauth/callback?code=x"})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Contains(t, r.errMessage(), "no state")
}

func TestCallbackPagesTellTheTruth(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, harnessOpts{clock: clk})

	t.Run("denied, with the provider's message escaped", func(t *testing.T) {
		st := h.start(wire.StartRequest{Provider: "fake"})
		p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "error": {"access_denied"}, "error_description": {"<script>alert(1)</script> user said no"}}), nil)
		assert.Equal(t, http.StatusOK, p.status)
		body := string(p.body)
		assert.Contains(t, body, "access denied")
		assert.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt; user said no")
		assert.NotContains(t, body, "<script>")
		assert.NotContains(t, body, "<h1>Connected")
		assert.Equal(t, "error", h.status(st.State).Status)
		assert.Equal(t, "provider_denied", h.status(st.State).Reason)
	})
	t.Run("exchange failed", func(t *testing.T) {
		st := h.start(wire.StartRequest{Provider: "fake"})
		p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {badCode}}), nil)
		assert.Equal(t, http.StatusBadGateway, p.status)
		assert.Contains(t, string(p.body), "Not connected")
		assert.NotContains(t, string(p.body), "<h1>Connected")
	})
	t.Run("expired", func(t *testing.T) {
		st := h.start(wire.StartRequest{Provider: "fake"})
		clk.Advance(10 * time.Minute)
		p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
		assert.Equal(t, http.StatusGone, p.status)
		assert.Contains(t, string(p.body), "expired")
		assert.NotContains(t, string(p.body), "<h1>Connected")
		assert.Equal(t, "expired", h.status(st.State).Status)
	})
	t.Run("canceled flow", func(t *testing.T) {
		st := h.start(wire.StartRequest{Provider: "fake"})
		r := h.local("POST", "/v1/flows/"+st.State+"/cancel", nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
		assert.Equal(t, http.StatusConflict, p.status)
		assert.Contains(t, string(p.body), "already ended (canceled")
		assert.NotContains(t, string(p.body), "<h1>Connected")
	})
	t.Run("unknown", func(t *testing.T) {
		p := h.browser("GET", callbackPath(url.Values{"state": {"no-such-state"}, "code": {goodCode}}), nil)
		assert.Equal(t, http.StatusNotFound, p.status)
		assert.Contains(t, string(p.body), "Unknown sign-in")
	})
	t.Run("no state", func(t *testing.T) {
		p := h.browser("GET", "/oauth/callback?code=x", nil)
		assert.Equal(t, http.StatusBadRequest, p.status)
		assert.Contains(t, string(p.body), "Invalid callback")
	})
	assert.Equal(t, 1, h.provider.Calls(), "only the bad code reached the token endpoint")
}

// A second callback while the first one's code is being exchanged is
// ignored and says so; it does not report success.
func TestCallbackWhileExchanging(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	release := h.provider.Hold()
	first := make(chan resp, 1)
	go func() {
		first <- h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	}()
	h.provider.WaitEntered(t)
	p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	assert.Equal(t, http.StatusConflict, p.status)
	assert.Contains(t, string(p.body), "Already in progress")

	c := h.local("POST", "/v1/flows/"+st.State+"/cancel", nil)
	assert.Equal(t, http.StatusConflict, c.status)
	assert.Equal(t, wire.CodeExchangeInProgress, c.errCode())

	release()
	r := <-first
	assert.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, string(r.body), "<h1>Connected</h1>")
}

// A CORS / Private Network Access preflight is answered without touching
// the flow, which then completes normally.
func TestPreflightDoesNotBreakTheFlow(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	before := h.counting.calls.Load()
	r := h.browser("OPTIONS", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), map[string]string{
		"Origin": "https://provider.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Private-Network": "true",
	})
	assert.Equal(t, http.StatusNoContent, r.status)
	assert.Equal(t, "true", r.header.Get("Access-Control-Allow-Private-Network"))
	assert.Equal(t, "https://provider.example", r.header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, before, h.counting.calls.Load(), "the preflight reached the engine")
	assert.Equal(t, "awaiting_callback", h.status(st.State).Status)

	p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	assert.Contains(t, string(p.body), "<h1>Connected</h1>")
}

func TestErrorShapes(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	done := h.start(wire.StartRequest{Provider: "fake", Account: "other"})
	require.Equal(t, http.StatusOK, h.local("POST", "/v1/flows/"+done.State+"/cancel", nil).status)

	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
		says               string
	}{
		{"unknown provider lists known ones", "POST", "/v1/flows", wire.StartRequest{Provider: "gitbub"}, 404, wire.CodeUnknownProvider, "fake"},
		{"no provider", "POST", "/v1/flows", `{}`, 400, wire.CodeBadRequest, "fake"},
		{"bad transport", "POST", "/v1/flows", wire.StartRequest{Provider: "fake", Transport: "carrier-pigeon"}, 400, wire.CodeUnknownTransport, "loopback"},
		{"bad ttl", "POST", "/v1/flows", wire.StartRequest{Provider: "fake", TTL: "forever"}, 400, wire.CodeBadRequest, "ttl"},
		{"malformed json", "POST", "/v1/flows", `{"provider":`, 400, wire.CodeBadRequest, "not valid"},
		{"unknown field", "POST", "/v1/flows", `{"provider":"fake","scope":"x"}`, 400, wire.CodeBadRequest, "scope"},
		{"empty body", "POST", "/v1/flows", ``, 400, wire.CodeBadRequest, "empty"},
		{"unknown state", "GET", "/v1/flows/nope", nil, 404, wire.CodeUnknownState, "flowctl list"},
		{"cancel unknown", "POST", "/v1/flows/nope/cancel", nil, 404, wire.CodeUnknownState, "flowctl"},
		{"cancel finished", "POST", "/v1/flows/" + done.State + "/cancel", nil, 404, wire.CodeFlowFinished, "flowctl connect fake"},
		{"history unknown", "GET", "/v1/flows/nope/history", nil, 404, wire.CodeUnknownState, "flowctl"},
		{"bad wait", "GET", "/v1/flows/" + st.State + "?wait=soon", nil, 400, wire.CodeBadRequest, "wait"},
		{"bad list status", "GET", "/v1/flows?status=done", nil, 400, wire.CodeBadRequest, "awaiting_callback"},
		{"not connected", "GET", "/v1/providers/fake/token", nil, 404, wire.CodeNotConnected, "flowctl connect fake"},
		{"token unknown provider", "GET", "/v1/providers/nope/token", nil, 404, wire.CodeUnknownProvider, "fake"},
		{"no route", "GET", "/v2/everything", nil, 404, wire.CodeNotFound, "docs/api.yaml"},
		{"wrong method", "PUT", "/v1/flows", nil, 405, wire.CodeMethodNotAllowed, "GET"},
		{"relay unknown state", "POST", "/v1/callbacks", wire.CallbackRequest{State: "nope", Code: "x"}, 404, wire.CodeUnknownState, "flowctl"},
		{"relay url and fields", "POST", "/v1/callbacks", wire.CallbackRequest{URL: "http://x/?state=a", State: "a"}, 400, wire.CodeBadRequest, "not both"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.local(tc.method, tc.path, tc.body)
			assert.Equal(t, tc.status, r.status, string(r.body))
			assert.Equal(t, "application/json", r.header.Get("Content-Type"))
			var e wire.Error
			require.NoError(t, json.Unmarshal(r.body, &e), "every error is JSON: %s", r.body)
			assert.Equal(t, tc.code, e.Err.Code)
			assert.Contains(t, e.Err.Message, tc.says)
		})
	}
	r := h.local("PUT", "/v1/flows", nil)
	assert.Contains(t, r.header.Get("Allow"), "POST")
	assert.Equal(t, "awaiting_callback", h.status(st.State).Status, "no error above touched the live flow")
}

func TestGatewayTransportNeedsPublicBaseURL(t *testing.T) {
	h := newHarness(t, harnessOpts{noGateway: true})
	r := h.local("POST", "/v1/flows", wire.StartRequest{Provider: "fake", Transport: "gateway"})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, wire.CodeGatewayNotConfigured, r.errCode())
	assert.Contains(t, r.errMessage(), "public_base_url")
}

func TestSizeLimits(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})

	big := `{"provider":"fake","account":"` + strings.Repeat("a", wire.MaxBodyBytes) + `"}`
	r := h.local("POST", "/v1/flows", big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	assert.Equal(t, wire.CodeTooLarge, r.errCode())

	r = h.local("GET", "/v1/flows/"+strings.Repeat("s", wire.MaxStateLen+1), nil)
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, wire.CodeTooLarge, r.errCode())

	r = h.local("GET", "/v1/flows?provider="+strings.Repeat("p", wire.MaxQueryBytes), nil)
	assert.Equal(t, http.StatusRequestURITooLong, r.status)
	assert.Equal(t, wire.CodeTooLarge, r.errCode())

	p := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {strings.Repeat("c", wire.MaxCodeLen+1)}}), nil)
	assert.Equal(t, http.StatusBadRequest, p.status)
	assert.Contains(t, string(p.body), "Invalid callback")
	p = h.browser("GET", callbackPath(url.Values{"state": {st.State}, "error": {"x"}, "error_description": {strings.Repeat("d", wire.MaxErrorDescriptionLen+1)}}), nil)
	assert.Equal(t, http.StatusBadRequest, p.status)

	r = h.gateway("POST", "/v1/callbacks", wire.CallbackRequest{State: st.State, Code: strings.Repeat("c", wire.MaxCodeLen+1)})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, wire.CodeTooLarge, r.errCode())

	assert.Equal(t, "awaiting_callback", h.status(st.State).Status, "no oversized input changed the flow")
	assert.Zero(t, h.provider.Calls())
}

func TestStatusWait(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	// A wait that runs out returns the flow as it stands, not an error.
	r := h.local("GET", "/v1/flows/"+st.State+"?wait=50ms", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var f wire.Flow
	require.NoError(t, json.Unmarshal(r.body, &f))
	assert.Equal(t, "awaiting_callback", f.Status)
	assert.False(t, f.Terminal)

	// A terminal flow's wait returns at once.
	require.Equal(t, http.StatusOK, h.local("POST", "/v1/flows/"+st.State+"/cancel", nil).status)
	r = h.local("GET", "/v1/flows/"+st.State+"?wait=5m", nil)
	require.NoError(t, json.Unmarshal(r.body, &f))
	assert.Equal(t, "error", f.Status)
	assert.Equal(t, "canceled", f.Reason)
}

// Shutdown ends long-polls at once (they hold no flow), instead of waiting
// out their wire.MaxWait.
func TestShutdownEndsLongPolls(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	got := make(chan resp, 1)
	go func() { got <- h.local("GET", "/v1/flows/"+st.State+"?wait=5m", nil) }()
	require.Eventually(t, func() bool { return h.counting.calls.Load() >= 2 }, 10*time.Second, 5*time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(context.Background()) }()
	select {
	case r := <-got:
		assert.Equal(t, http.StatusOK, r.status)
	case <-time.After(20 * time.Second):
		t.Fatal("a long-poll held the shutdown")
	}
	require.NoError(t, <-done)
}

func TestStrangerOnTheSocketIsRefused(t *testing.T) {
	other := 1 << 30 // not our uid: the server then sees us as another user
	h := newHarness(t, harnessOpts{uid: &other})
	for _, rt := range wire.Routes {
		r := h.local(rt.Method, fillPath(rt), bodyFor(rt))
		assert.Equal(t, http.StatusForbidden, r.status, rt.Name)
		assert.Contains(t, r.errMessage(), fmt.Sprintf("only uid %d", other), rt.Name)
	}
	assert.Zero(t, h.counting.calls.Load())
}

func TestMetricsAfterAConnect(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake"})
	h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	h.browser("GET", callbackPath(url.Values{"state": {"unknown-state"}, "code": {goodCode}}), nil)
	h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	r := h.local("GET", "/metrics", nil)
	require.Equal(t, http.StatusOK, r.status)
	m := string(r.body)
	for _, want := range []string{
		`flowd_flows_started_total{provider="fake"} 1`,
		`flowd_flows_completed_total{provider="fake"} 1`,
		`flowd_callback_wait_seconds_count{provider="fake"} 1`,
		`flowd_callbacks_stray_total{kind="unknown_state"} 1`,
		`flowd_callbacks_stray_total{kind="flow_finished"} 1`,
		`flowd_log_append_seconds_count`,
	} {
		assert.Contains(t, m, want)
	}
	assert.Equal(t, http.StatusUnauthorized, h.browser("GET", "/metrics", nil).status, "metrics are socket-only")
}

func TestHealthAndProviders(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := h.local("GET", "/v1/health", nil)
	require.Equal(t, http.StatusOK, r.status)
	var hr wire.HealthResponse
	require.NoError(t, json.Unmarshal(r.body, &hr))
	assert.Equal(t, "ok", hr.Status)
	assert.Equal(t, 1, hr.Providers)
	assert.Equal(t, "http://"+h.tcp+"/oauth/callback", hr.LoopbackRedirectURI)

	r = h.local("GET", "/v1/providers", nil)
	require.Equal(t, http.StatusOK, r.status)
	assert.NotContains(t, string(r.body), clientSecret)
	var pr wire.ProvidersResponse
	require.NoError(t, json.Unmarshal(r.body, &pr))
	require.Len(t, pr.Providers, 1)
	assert.Equal(t, "fake", pr.Providers[0].Name)
}
