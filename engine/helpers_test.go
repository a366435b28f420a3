package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"flowd.local/flowd/engine"
	"flowd.local/flowd/engine/fakeclock"
	"flowd.local/flowd/persist/memlog"
	"flowd.local/flowd/states"
)

// Known secrets. They are distinctive so a byte scan of a database file, a
// log buffer or an error string finds them if they leak.
const (
	clientID     = "client-id-flowd-test"
	clientSecret = "CLIENT-SECRET-d0ntl34k"
	// codePrefix starts every authorization code the fake provider issues.
	codePrefix = "AUTHCODE-S3CR3T-"
)

// epoch is where the fake clock starts. Only durations from it are asserted.
var epoch = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// testingT is what both *testing.T and *rapid.T offer.
type testingT interface {
	require.TestingT
	Helper()
}

// tokenRequest is one call to the fake token endpoint, as it arrived.
type tokenRequest struct {
	Form        url.Values
	BasicUser   string
	BasicPass   string
	HasBasic    bool
	GrantType   string
	Code        string
	Verifier    string
	RedirectURI string
}

// grant is an authorization code the fake provider issued.
type grant struct {
	challenge   string
	redirectURI string
	scope       string
	used        bool
}

// fakeProvider is an OAuth 2.0 authorization server in a test: it issues
// codes for authorization URLs, checks PKCE and client authentication at its
// token endpoint, rotates refresh tokens, and records every call.
type fakeProvider struct {
	t     testing.TB
	srv   *httptest.Server
	style oauth2.AuthStyle

	mu       sync.Mutex
	grants   map[string]*grant
	refresh  map[string]bool // refresh token -> still valid
	issued   []string        // every access and refresh token issued
	requests []tokenRequest
	n        int
	// scopeField is returned as the token response's "scope" when set;
	// omitScope leaves the field out.
	scopeField string
	omitScope  bool
	expiresIn  int
	// noRefresh leaves refresh_token out of responses.
	noRefresh bool
	// override, when set, answers the token endpoint instead of the
	// provider's logic (error bodies, HTML, garbage, stalls).
	override http.HandlerFunc
	// gate, when set, holds every token request until it is closed;
	// entered receives one value per request that reached the gate.
	gate    chan struct{}
	entered chan struct{}

	calls atomic.Int64
}

func newFakeProvider(t testing.TB, style oauth2.AuthStyle) *fakeProvider {
	p := &fakeProvider{t: t, style: style, grants: map[string]*grant{}, refresh: map[string]bool{}, expiresIn: 3600, omitScope: true}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serveToken))
	t.Cleanup(p.srv.Close)
	return p
}

// config returns the engine's view of this provider under name.
func (p *fakeProvider) config(name string) engine.Provider {
	return engine.Provider{
		Name: name, AuthURL: "https://auth.example.test/authorize", TokenURL: p.srv.URL + "/token",
		AuthStyle: p.style, ClientID: clientID, ClientSecret: clientSecret, Scopes: []string{"repo", "read:user"},
	}
}

// authorize plays the user at the provider: it checks the authorization
// URL and returns the code the provider would redirect back with.
func (p *fakeProvider) authorize(t testingT, authURL string) (state, code string) {
	t.Helper()
	u, err := url.Parse(authURL)
	require.NoError(t, err)
	q := u.Query()
	require.Equal(t, "code", q.Get("response_type"))
	require.Equal(t, clientID, q.Get("client_id"))
	require.Equal(t, "S256", q.Get("code_challenge_method"))
	require.NotEmpty(t, q.Get("code_challenge"))
	require.Empty(t, q.Get("code_verifier"), "the verifier must never be in the URL")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	code = fmt.Sprintf("%s%04d", codePrefix, p.n)
	p.grants[code] = &grant{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), scope: q.Get("scope")}
	return q.Get("state"), code
}

func (p *fakeProvider) tokenCalls() int { return int(p.calls.Load()) }

func (p *fakeProvider) lastRequest() tokenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(p.t, p.requests)
	return p.requests[len(p.requests)-1]
}

// secrets returns every token the provider issued.
func (p *fakeProvider) secrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.issued...)
}

func (p *fakeProvider) serveToken(w http.ResponseWriter, r *http.Request) {
	p.calls.Add(1)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	req := tokenRequest{Form: r.PostForm, GrantType: r.PostForm.Get("grant_type"), Code: r.PostForm.Get("code"),
		Verifier: r.PostForm.Get("code_verifier"), RedirectURI: r.PostForm.Get("redirect_uri")}
	req.BasicUser, req.BasicPass, req.HasBasic = r.BasicAuth()
	p.mu.Lock()
	p.requests = append(p.requests, req)
	gate, entered, override := p.gate, p.entered, p.override
	p.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if override != nil {
		override(w, r)
		return
	}
	// Client authentication exactly as the configured style says.
	id, secret := req.Form.Get("client_id"), req.Form.Get("client_secret")
	if p.style == oauth2.AuthStyleInHeader {
		if !req.HasBasic || req.Form.Has("client_secret") {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "expected HTTP basic client authentication only")
			return
		}
		id, _ = url.QueryUnescape(req.BasicUser)
		secret, _ = url.QueryUnescape(req.BasicPass)
	} else if req.HasBasic {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "expected client credentials in the body only")
		return
	}
	if id != clientID || secret != clientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "wrong client credentials")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch req.GrantType {
	case "authorization_code":
		g := p.grants[req.Code]
		switch {
		case g == nil:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
			return
		case g.used:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "code already redeemed")
			return
		case s256(req.Verifier) != g.challenge:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		case req.RedirectURI != g.redirectURI:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
			return
		}
		g.used = true
	case "refresh_token":
		rt := req.Form.Get("refresh_token")
		if !p.refresh[rt] {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token unknown or already used")
			return
		}
		p.refresh[rt] = false // rotation: a refresh token is good once
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", req.GrantType)
		return
	}
	p.n++
	body := map[string]any{"access_token": fmt.Sprintf("ACCESS-TOKEN-S3CR3T-%04d", p.n), "token_type": "Bearer"}
	p.issued = append(p.issued, body["access_token"].(string))
	if p.expiresIn > 0 {
		body["expires_in"] = p.expiresIn
	}
	if !p.noRefresh {
		rt := fmt.Sprintf("REFRESH-TOKEN-S3CR3T-%04d", p.n)
		p.refresh[rt] = true
		p.issued = append(p.issued, rt)
		body["refresh_token"] = rt
	}
	if !p.omitScope {
		body["scope"] = p.scopeField
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// harness is an engine on a fake clock and an in-memory log, with one
// fake provider named "gh".
type harness struct {
	t    *testing.T
	ctx  context.Context
	clk  *fakeclock.Clock
	log  engine.Log
	prov *fakeProvider
	cfg  engine.Config
	e    *engine.Engine
	logs *syncBuffer
}

type harnessOption func(*engine.Config)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), clk: fakeclock.New(epoch), log: memlog.New(), logs: &syncBuffer{}}
	h.prov = newFakeProvider(t, oauth2.AuthStyleInParams)
	h.cfg = engine.Config{
		Log: h.log, Clock: h.clk, Providers: []engine.Provider{h.prov.config("gh")},
		Logger: newTestLogger(h.logs), ExchangeTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.log = h.cfg.Log
	h.open()
	t.Cleanup(func() { _ = h.e.Close() })
	return h
}

// open (re)opens the engine on the harness's log.
func (h *harness) open() {
	h.t.Helper()
	e, err := engine.Open(h.ctx, h.cfg)
	require.NoError(h.t, err)
	h.e = e
}

// restart closes the engine and opens a new one on the same log.
func (h *harness) restart() {
	h.t.Helper()
	require.NoError(h.t, h.e.Close())
	h.open()
}

// start begins a flow for provider gh and principal, and returns it.
func (h *harness) start(principal string) engine.Started {
	h.t.Helper()
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Principal: principal})
	require.NoError(h.t, err)
	return st
}

// connect starts a flow, authorizes it at the fake provider and delivers
// its callback, and returns the finished flow.
func (h *harness) connect(principal string) states.Flow {
	h.t.Helper()
	st := h.start(principal)
	_, code := h.prov.authorize(h.t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.State, Code: code})
	require.NoError(h.t, err)
	require.Equal(h.t, states.Complete, f.State)
	return f
}

func (h *harness) status(state string) states.Flow {
	h.t.Helper()
	f, err := h.e.Status(h.ctx, state)
	require.NoError(h.t, err)
	return f
}

// events returns the events of a flow's history, in order.
func (h *harness) events(state string) []states.Event {
	h.t.Helper()
	hist, err := h.e.History(h.ctx, state)
	require.NoError(h.t, err)
	out := make([]states.Event, len(hist))
	for i, r := range hist {
		out[i] = r.Event
	}
	return out
}

// dump reads the whole log in order.
func dump(t testingT, l engine.Log) []states.Record {
	t.Helper()
	var out []states.Record
	require.NoError(t, l.Scan(context.Background(), 0, func(r states.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

// checkReplay asserts the whole log replays legally through the machine.
func checkReplay(t testingT, l engine.Log) map[string]states.Flow {
	t.Helper()
	flows, err := states.Replay(dump(t, l), nil)
	require.NoError(t, err)
	return flows
}

// syncBuffer is a bytes buffer safe for concurrent writers (slog handlers
// write from many goroutines).
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestLogger logs everything, debug included, as text into w.
func newTestLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func queryOf(t testingT, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Query()
}
