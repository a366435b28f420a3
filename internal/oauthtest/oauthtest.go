// Package oauthtest is a fake OAuth 2.0 authorization server for flowd's
// tests: the provider side of a connect, strict where a real provider is
// strict, and observable where a test needs to count or hold what reaches
// it.
//
// A test plays the user at the provider with [Server.Authorize], which
// checks the authorization URL the engine built and issues a code bound to
// its PKCE challenge and redirect URI. The token endpoint then
//
//   - authenticates the client exactly as [Options.AuthStyle] says (HTTP
//     Basic only, or the form body only: a client that falls back or sends
//     both is refused with invalid_client);
//   - redeems an authorization code once, and only with the verifier whose
//     S256 challenge the code was issued for and the same redirect_uri
//     (invalid_grant otherwise, with the reason as error_description);
//   - rotates refresh tokens: each is good for one refresh_token grant;
//   - answers Bearer tokens with expires_in 3600 and a refresh token, and
//     no scope field, unless told otherwise ([Server.SetScope],
//     [Server.SetExpiresIn], [Server.SetRefreshTokens]).
//
// It records every token request ([Server.Requests], [Server.Calls],
// [Server.Uses]) and every secret that crossed the wire
// ([Server.Secrets]), so a test can count redemptions and scan logs,
// databases and exports for leaks. It can be held ([Server.Hold]), slowed
// ([Options.Latency]) or made to answer something else entirely
// ([Server.SetOverride], [Server.Refuse]).
//
// Secrets it issues are distinctive ("AUTHCODE-S3CR3T-0001",
// "ACCESS-TOKEN-S3CR3T-0002", ...), numbered from one counter per server,
// so the same calls give the same secrets: recordings made against it are
// byte-for-byte reproducible.
package oauthtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Defaults of [Options]. The secrets are distinctive so that a byte scan
// of a database file, a log or an error string finds them if they leak.
const (
	DefaultClientID     = "client-id-flowd-test"
	DefaultClientSecret = "CLIENT-SECRET-d0ntl34k"
	// DefaultAuthURL is the authorization endpoint clients are configured
	// with. Nothing serves it: Authorize plays the user's visit there.
	DefaultAuthURL = "https://auth.example.test/authorize"
	// CodePrefix starts every authorization code Authorize issues.
	CodePrefix = "AUTHCODE-S3CR3T-"
)

// Options shape a Server. The zero value is a strict provider with the
// default client credentials in the form body.
type Options struct {
	// ClientID and ClientSecret are the only client credentials the token
	// endpoint accepts (defaults DefaultClientID, DefaultClientSecret).
	ClientID, ClientSecret string
	// AuthStyle is where the client must send its credentials:
	// oauth2.AuthStyleInHeader for HTTP Basic only, anything else for the
	// form body only (Server.AuthStyle is then oauth2.AuthStyleInParams).
	// It is fixed, as at real providers, so a client that guesses the style
	// is seen to guess.
	AuthStyle oauth2.AuthStyle
	// AuthURL is the authorization endpoint to configure clients with
	// (default DefaultAuthURL).
	AuthURL string
	// Latency, when set, runs on every token request once any Hold has let
	// it through and before it is answered: a fake clock's Advance, so that
	// an exchange takes time on that clock, or a sleep that widens the
	// window in which a crash can land mid-exchange.
	Latency func()
	// AcceptCode, when set, makes codes that Authorize did not issue
	// redeemable when it returns true for them: for tests that drive flowd
	// over its API and make up codes rather than play the user at the
	// provider. Such a code is bound to no PKCE challenge and no redirect
	// URI, so the token endpoint asks only that some verifier be sent; it is
	// still redeemed once.
	AcceptCode func(code string) bool
}

// T is what Authorize and WaitEntered need of a test: *testing.T,
// *testing.B and *rapid.T all have it.
type T interface {
	Helper()
	Errorf(format string, args ...any)
	FailNow()
}

// Request is one call to the token endpoint, as it arrived.
type Request struct {
	// Form is the parsed form body.
	Form url.Values
	// BasicUser and BasicPass are the HTTP Basic credentials as sent
	// (still form-encoded, as RFC 6749 §2.3.1 has clients send them);
	// HasBasic says whether there were any.
	BasicUser, BasicPass string
	HasBasic             bool
	// GrantType, Code, Verifier and RedirectURI are the form fields of
	// those names (grant_type, code, code_verifier, redirect_uri).
	GrantType, Code, Verifier, RedirectURI string
}

// grant is an authorization code the server will redeem.
type grant struct {
	challenge   string
	redirectURI string
	// unbound: made up by the test and let in by Options.AcceptCode; no
	// challenge or redirect URI to check.
	unbound bool
	used    bool
}

// Server is a running fake provider. Its exported fields are what a client
// is configured with; they never change.
type Server struct {
	// URL is the server's base URL.
	URL string
	// TokenURL is its token endpoint (any path under URL serves it; this
	// one is URL + "/token").
	TokenURL string
	// AuthURL, ClientID, ClientSecret and AuthStyle are the Options in
	// force, defaults filled in.
	AuthURL, ClientID, ClientSecret string
	AuthStyle                       oauth2.AuthStyle

	t      testing.TB
	srv    *httptest.Server
	accept func(string) bool
	delay  func()
	calls  atomic.Int64

	mu       sync.Mutex
	n        int // numbers codes and tokens
	grants   map[string]*grant
	refresh  map[string]bool // refresh token -> still good
	requests []Request
	uses     map[string]int // authorization code -> times presented
	issued   []string       // access and refresh tokens, in issue order
	seen     []string       // secrets that crossed the wire, either way
	// The shape of a successful token response.
	scope     string
	withScope bool
	expiresIn int
	noRefresh bool
	override  http.HandlerFunc
	// A hold: requests wait for gate to close; entered gets one value per
	// request that reached it.
	gate    chan struct{}
	entered chan struct{}
	closed  bool
	// rev is the revocation endpoint's state (revoke.go).
	rev revocation
}

// New starts a fake provider; it is closed when the test ends.
func New(t testing.TB, o Options) *Server {
	s := &Server{
		AuthURL: o.AuthURL, ClientID: o.ClientID, ClientSecret: o.ClientSecret, AuthStyle: o.AuthStyle,
		t: t, accept: o.AcceptCode, delay: o.Latency,
		grants: map[string]*grant{}, refresh: map[string]bool{}, uses: map[string]int{},
		expiresIn: 3600,
	}
	if s.AuthURL == "" {
		s.AuthURL = DefaultAuthURL
	}
	if s.ClientID == "" {
		s.ClientID = DefaultClientID
	}
	if s.ClientSecret == "" {
		s.ClientSecret = DefaultClientSecret
	}
	if s.AuthStyle != oauth2.AuthStyleInHeader {
		s.AuthStyle = oauth2.AuthStyleInParams
	}
	s.seen = []string{s.ClientSecret}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveToken))
	s.URL = s.srv.URL
	s.TokenURL = s.srv.URL + "/token"
	t.Cleanup(s.Close)
	return s
}

// Close releases any held requests and shuts the server down: later token
// requests fail to connect, as with a provider that is down. It is safe to
// call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.gate != nil && !s.closed {
		close(s.gate)
	}
	s.closed = true
	s.mu.Unlock()
	s.srv.Close()
}

// S256 is the PKCE code challenge of verifier (RFC 7636 §4.2).
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Authorize plays the user approving access at the provider: it checks
// the authorization URL as a provider would (response_type=code, this
// client's id, an S256 PKCE challenge, and no verifier in the URL) and
// returns the URL's state and a fresh code bound to the challenge and the
// redirect URI, as the provider would redirect back with them.
func (s *Server) Authorize(t T, authURL string) (state, code string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Errorf("authorization URL %q does not parse: %v", authURL, err)
		t.FailNow()
	}
	q := u.Query()
	for _, c := range []struct{ param, got, want string }{
		{"response_type", q.Get("response_type"), "code"},
		{"client_id", q.Get("client_id"), s.ClientID},
		{"code_challenge_method", q.Get("code_challenge_method"), "S256"},
	} {
		if c.got != c.want {
			t.Errorf("authorization URL: %s is %q, want %q", c.param, c.got, c.want)
		}
	}
	if q.Get("code_challenge") == "" {
		t.Errorf("authorization URL has no code_challenge")
	}
	if q.Has("code_verifier") {
		t.Errorf("the PKCE verifier must never be in the authorization URL")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	code = fmt.Sprintf("%s%04d", CodePrefix, s.n)
	s.grants[code] = &grant{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri")}
	s.seen = append(s.seen, code)
	return q.Get("state"), code
}

// SetScope makes successful token responses carry a "scope" field with
// this value, even an empty one.
func (s *Server) SetScope(scope string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scope, s.withScope = scope, true
}

// OmitScope leaves the "scope" field out of token responses (the default):
// the client must assume the scopes it asked for were granted.
func (s *Server) OmitScope() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scope, s.withScope = "", false
}

// SetExpiresIn sets the expires_in of token responses, in seconds; 0
// leaves it out (a token that does not say when it expires).
func (s *Server) SetExpiresIn(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = seconds
}

// SetRefreshTokens says whether token responses carry a refresh token
// (they do by default).
func (s *Server) SetRefreshTokens(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noRefresh = !on
}

// SetOverride makes h answer every token request instead of the provider's
// logic (error bodies, HTML, garbage, stalls); nil restores it. Requests
// are still recorded and counted, held and slowed first.
func (s *Server) SetOverride(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = h
}

// Refuse makes the token endpoint answer every request with HTTP 400 and
// the OAuth error errCode (invalid_grant, say) with desc as its
// error_description, until SetOverride(nil).
func (s *Server) Refuse(errCode, desc string) {
	s.SetOverride(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, http.StatusBadRequest, errCode, desc)
	})
}

// Hold makes token requests wait until release is called (or the test
// ends, or Close): an exchange or a refresh stuck at the provider.
// Requests that arrived before Hold are not held.
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate := make(chan struct{})
	s.gate, s.entered = gate, make(chan struct{}, 1024)
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed {
				close(gate)
			}
			if s.gate == gate {
				s.gate = nil
			}
		})
	}
	s.t.Cleanup(release)
	return release
}

// WaitEntered waits until a token request is held by Hold, and fails the
// test if none comes within 30 seconds.
func (s *Server) WaitEntered(t T) {
	t.Helper()
	s.mu.Lock()
	entered := s.entered
	s.mu.Unlock()
	if entered == nil {
		t.Errorf("WaitEntered without Hold")
		t.FailNow()
	}
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Errorf("no request reached the token endpoint within 30s")
		t.FailNow()
	}
}

// Calls is how many requests reached the token endpoint, of any grant.
func (s *Server) Calls() int { return int(s.calls.Load()) }

// CodeRequests is how many authorization_code requests reached the token
// endpoint.
func (s *Server) CodeRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.uses {
		n += k
	}
	return n
}

// Uses is how many times code was presented at the token endpoint.
func (s *Server) Uses(code string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uses[code]
}

// Codes is how many distinct codes were presented at the token endpoint.
func (s *Server) Codes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.uses)
}

// Reused is how many codes were presented more than once, with up to five
// of them as examples ("code x2"). A client that keeps its promise of one
// redemption per code never makes it more than zero.
func (s *Server) Reused() (n int, examples []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	codes := make([]string, 0, len(s.uses))
	for c := range s.uses {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		if k := s.uses[c]; k > 1 {
			n++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%s x%d", c, k))
			}
		}
	}
	return n, examples
}

// Requests returns every token request so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// LastRequest returns the latest token request, and fails the test if
// there was none.
func (s *Server) LastRequest() Request {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		s.t.Fatal("no request reached the token endpoint")
	}
	return s.requests[len(s.requests)-1]
}

// Issued returns every token the server issued, in order: each successful
// response's access token, then its refresh token if it had one.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Secrets returns every secret that crossed the wire to or from the
// server: the client secret, the codes it issued or was asked to redeem,
// the verifiers and refresh tokens it was sent, and the tokens it issued.
// None of them may appear in a log, an event record or an export.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == RevokePath {
		s.serveRevoke(w, r)
		return
	}
	s.calls.Add(1)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	f := r.PostForm
	req := Request{Form: f, GrantType: f.Get("grant_type"), Code: f.Get("code"),
		Verifier: f.Get("code_verifier"), RedirectURI: f.Get("redirect_uri")}
	req.BasicUser, req.BasicPass, req.HasBasic = r.BasicAuth()
	s.mu.Lock()
	s.requests = append(s.requests, req)
	if req.GrantType == "authorization_code" {
		s.uses[req.Code]++
	}
	for _, v := range []string{req.Code, req.Verifier, f.Get("refresh_token")} {
		if v != "" {
			s.seen = append(s.seen, v)
		}
	}
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if s.delay != nil {
		s.delay()
	}
	s.mu.Lock()
	override := s.override
	s.mu.Unlock()
	if override != nil {
		override(w, r)
		return
	}
	if !s.clientAuthenticated(w, req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.GrantType {
	case "authorization_code":
		if !s.redeem(w, req) {
			return
		}
	case "refresh_token":
		rt := f.Get("refresh_token")
		if !s.refresh[rt] {
			WriteError(w, http.StatusBadRequest, "invalid_grant", "refresh token unknown or already used")
			return
		}
		s.refresh[rt] = false // rotation: a refresh token is good once
	default:
		WriteError(w, http.StatusBadRequest, "unsupported_grant_type", req.GrantType)
		return
	}
	s.n++
	tokens := []string{fmt.Sprintf("ACCESS-TOKEN-S3CR3T-%04d", s.n)}
	body := map[string]any{"access_token": tokens[0], "token_type": "Bearer"}
	if s.expiresIn > 0 {
		body["expires_in"] = s.expiresIn
	}
	if !s.noRefresh {
		rt := fmt.Sprintf("REFRESH-TOKEN-S3CR3T-%04d", s.n)
		s.refresh[rt] = true
		tokens = append(tokens, rt)
		body["refresh_token"] = rt
	}
	s.issued = append(s.issued, tokens...)
	s.seen = append(s.seen, tokens...)
	if s.withScope {
		body["scope"] = s.scope
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// clientAuthenticated checks the client's credentials exactly as
// AuthStyle says, and answers invalid_client when they are wrong.
func (s *Server) clientAuthenticated(w http.ResponseWriter, req Request) bool {
	id, secret := req.Form.Get("client_id"), req.Form.Get("client_secret")
	if s.AuthStyle == oauth2.AuthStyleInHeader {
		if !req.HasBasic || req.Form.Has("client_secret") {
			WriteError(w, http.StatusUnauthorized, "invalid_client", "expected HTTP basic client authentication only")
			return false
		}
		id, _ = url.QueryUnescape(req.BasicUser)
		secret, _ = url.QueryUnescape(req.BasicPass)
	} else if req.HasBasic {
		WriteError(w, http.StatusUnauthorized, "invalid_client", "expected client credentials in the body only")
		return false
	}
	if id != s.ClientID || secret != s.ClientSecret {
		WriteError(w, http.StatusUnauthorized, "invalid_client", "wrong client credentials")
		return false
	}
	return true
}

// redeem spends an authorization code, or answers invalid_grant saying why
// it cannot be. The caller holds mu.
func (s *Server) redeem(w http.ResponseWriter, req Request) bool {
	g := s.grants[req.Code]
	if g == nil && req.Code != "" && s.accept != nil && s.accept(req.Code) {
		g = &grant{unbound: true}
		s.grants[req.Code] = g
	}
	switch {
	case g == nil:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
		return false
	case g.used:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "code already redeemed")
		return false
	case g.unbound && req.Verifier == "":
		WriteError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return false
	case !g.unbound && S256(req.Verifier) != g.challenge:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return false
	case !g.unbound && req.RedirectURI != g.redirectURI:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
		return false
	}
	g.used = true
	return true
}

// WriteError answers an OAuth error response (RFC 6749 §5.2): a JSON body
// with error and error_description.
func WriteError(w http.ResponseWriter, status int, errCode, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": errCode, "error_description": desc})
}
