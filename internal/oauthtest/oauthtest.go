// Package oauthtest is a fake OAuth 2.0 authorization server for flowd's
// tests: the provider side of a connect, strict where a real provider is
// strict, and observable where a test needs to count or hold what reaches
// it.
//
// A test plays the user at the provider with [Server.Authorize] (or
// [Server.Redirect] and [Server.Deny] for the whole redirect URL), which
// checks the authorization URL the engine built and issues a code bound to
// its PKCE challenge and redirect URI. It is strict where the specs are,
// not lenient as Dex is, each rule with its RFC section in the code:
//
//   - it publishes authorization server metadata (RFC 8414) at
//     /.well-known/oauth-authorization-server and
//     /.well-known/openid-configuration, advertising
//     authorization_response_iss_parameter_supported and the
//     token_endpoint_auth_methods_supported in force, and every redirect
//     it builds, success or error, carries iss (RFC 9207 section 2);
//   - the token endpoint authenticates the client only by a method it
//     advertises (one method per request), refuses HTTP Basic or a form
//     client_secret with an empty secret, and a confidential client that
//     sends no secret (invalid_client, HTTP 401, RFC 6749 section 5.2);
//   - it redeems an authorization code once, and only with the verifier
//     whose S256 challenge the code was issued for and the same
//     redirect_uri (invalid_grant otherwise, with the reason as
//     error_description); a code presented again after it was redeemed is
//     refused and every token issued from it is revoked (RFC 6749 section
//     4.1.2);
//   - it rotates refresh tokens: each is good for one refresh_token grant,
//     and a reused one is refused with invalid_grant and revokes the
//     tokens of its grant (RFC 9700 section 4.14.2);
//   - access tokens expire exactly expires_in after issue on its clock
//     (Options.Now), with no tolerance: [Server.Active] and the /resource
//     endpoint (RFC 6750) refuse them from that instant;
//   - it answers Bearer tokens with expires_in 3600 and a refresh token, and
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
	"slices"
	"sort"
	"strings"
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

// Token endpoint auth methods (RFC 8414 token_endpoint_auth_methods_supported).
const (
	MethodNone   = "none"
	MethodBasic  = "client_secret_basic"
	MethodPost   = "client_secret_post"
	issParameter = "iss"
)

// Options shape a Server. The zero value is a strict provider with the
// default client credentials in the form body (client_secret_post only).
type Options struct {
	// ClientID and ClientSecret are the only client credentials the token
	// endpoint accepts (defaults DefaultClientID, DefaultClientSecret).
	ClientID, ClientSecret string
	// Public makes the client a public one: it has no secret (ClientSecret
	// is ignored) and authenticates with method none.
	Public bool
	// AuthMethods are the token endpoint auth methods the server advertises
	// and accepts, nothing else. Default: [none] for a public client, else
	// from AuthStyle.
	AuthMethods []string
	// AuthStyle is the older way to say AuthMethods for a confidential
	// client: oauth2.AuthStyleInHeader for client_secret_basic only,
	// anything else for client_secret_post only. It is fixed, as at real
	// providers, so a client that guesses is seen to guess.
	AuthStyle oauth2.AuthStyle
	// Issuer is the issuer identifier it advertises and puts in iss
	// (default: the server's URL).
	Issuer string
	// Now is the clock access tokens expire by, and the device endpoint
	// keeps time by (poll intervals, code expiry): a fake clock's Now in
	// engine tests. Default time.Now.
	Now func() time.Time
	// VerificationURI is the verification URI device authorizations name
	// (default: URL + "/device"), for recordings that must not carry a
	// random port.
	VerificationURI string
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
	// client is the client_id the code was issued to: only that client
	// redeems it, refreshes its tokens and revokes them (RFC 6749 sections
	// 4.1.3 and 6, RFC 7009 section 2.1). "" for an unbound code.
	client string
	// unbound: made up by the test and let in by Options.AcceptCode; no
	// challenge or redirect URI to check.
	unbound bool
	used    bool
	// revoked: the code was presented again after it was redeemed, so
	// every token of the grant is void (RFC 6749 section 4.1.2).
	revoked bool
}

// refreshToken is a refresh token the server issued, of one grant.
type refreshToken struct {
	grant *grant
	used  bool
}

// accessToken is an access token the server issued, of one grant.
type accessToken struct {
	grant  *grant
	expiry time.Time // zero: never
}

// Server is a running fake provider. Its exported fields are what a client
// is configured with; they never change.
type Server struct {
	// URL is the server's base URL.
	URL string
	// TokenURL is its token endpoint (any path under URL serves it; this
	// one is URL + "/token").
	TokenURL string
	// DeviceAuthURL is its device authorization endpoint (RFC 8628 section
	// 3.1), URL + "/device/code"; VerificationURI is where users enter a
	// user code (nothing serves it: ApproveDevice plays the user there).
	DeviceAuthURL, VerificationURI string
	// AuthURL, ClientID, ClientSecret, AuthMethods and Issuer are the
	// Options in force, defaults filled in (ClientSecret is "" for a public
	// client).
	AuthURL, ClientID, ClientSecret string
	AuthMethods                     []string
	Issuer                          string
	// AuthMethod is the method a client should be configured with: the
	// first of AuthMethods.
	AuthMethod string

	t      testing.TB
	srv    *httptest.Server
	accept func(string) bool
	delay  func()
	now    func() time.Time
	calls  atomic.Int64

	mu       sync.Mutex
	n        int // numbers codes and tokens
	grants   map[string]*grant
	refresh  map[string]*refreshToken
	access   map[string]*accessToken
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
	// clients are the clients the server knows, id to secret ("" for a
	// public one): ClientID's and those AddClient added.
	clients map[string]string

	// Device grants by device code, and the shape of device authorization responses.
	devices        map[string]*deviceGrant
	byUserCode     map[string]*deviceGrant
	deviceExpires  time.Duration
	deviceInterval time.Duration
	noInterval     bool
	slowDownNext   bool
	devicePolls    int
}

// deviceGrant is one device authorization (RFC 8628) and where it stands.
type deviceGrant struct {
	userCode string
	// client is the client the device code was issued to; only it polls.
	client  string
	expires time.Time
	// interval is the least gap the server accepts between two polls; it
	// grows by 5 seconds with every slow_down (section 3.5).
	interval time.Duration
	lastPoll time.Time
	approved bool
	denied   bool
	// spent: a token was issued for it; it is good for nothing more.
	spent     bool
	polls     int
	slowDowns int
}

// DeviceState is what the server knows of a device authorization.
type DeviceState struct {
	UserCode  string
	Polls     int
	SlowDowns int
	Interval  time.Duration
	Spent     bool
}

// New starts a fake provider; it is closed when the test ends.
func New(t testing.TB, o Options) *Server {
	s := &Server{
		AuthURL: o.AuthURL, ClientID: o.ClientID, ClientSecret: o.ClientSecret,
		AuthMethods: slices.Clone(o.AuthMethods), Issuer: o.Issuer,
		t: t, accept: o.AcceptCode, delay: o.Latency, now: o.Now,
		grants: map[string]*grant{}, refresh: map[string]*refreshToken{}, access: map[string]*accessToken{},
		uses: map[string]int{}, expiresIn: 3600,
		devices: map[string]*deviceGrant{}, byUserCode: map[string]*deviceGrant{},
		deviceExpires: 10 * time.Minute, deviceInterval: 5 * time.Second,
	}
	if s.AuthURL == "" {
		s.AuthURL = DefaultAuthURL
	}
	if s.ClientID == "" {
		s.ClientID = DefaultClientID
	}
	switch {
	case o.Public:
		s.ClientSecret = ""
	case s.ClientSecret == "":
		s.ClientSecret = DefaultClientSecret
	}
	if len(s.AuthMethods) == 0 {
		switch {
		case o.Public:
			s.AuthMethods = []string{MethodNone}
		case o.AuthStyle == oauth2.AuthStyleInHeader:
			s.AuthMethods = []string{MethodBasic}
		default:
			s.AuthMethods = []string{MethodPost}
		}
	}
	s.AuthMethod = s.AuthMethods[0]
	if s.now == nil {
		s.now = time.Now
	}
	if s.ClientSecret != "" {
		s.seen = []string{s.ClientSecret}
	}
	s.clients = map[string]string{s.ClientID: s.ClientSecret}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.serveMetadata)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveMetadata)
	mux.HandleFunc("/resource", s.serveResource)
	mux.HandleFunc("/device/code", s.serveDeviceAuth)
	mux.HandleFunc("/", s.serveToken)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	s.TokenURL = s.srv.URL + "/token"
	s.DeviceAuthURL = s.srv.URL + "/device/code"
	s.VerificationURI = o.VerificationURI
	if s.VerificationURI == "" {
		s.VerificationURI = s.srv.URL + "/device"
	}
	if s.Issuer == "" {
		s.Issuer = s.URL
	}
	t.Cleanup(s.Close)
	return s
}

// AddClient registers another client at the server, as a second OAuth app
// registered at a real provider: secret "" makes it a public one (it then
// authenticates with method none, which AuthMethods must list). Its codes,
// tokens and device codes are bound to it: presented by another client,
// even the default one, they are refused, so a test sees which client a
// request authenticated as. The token endpoint auth methods are the
// server's, shared by every client. A client id already known fails the
// test.
func (s *Server) AddClient(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.clients[id]; dup || id == "" {
		s.t.Fatalf("oauthtest: AddClient(%q): the id is empty or already registered", id)
	}
	s.clients[id] = secret
	if secret != "" {
		s.seen = append(s.seen, secret)
	}
}

// Metadata is the server's authorization server metadata (RFC 8414
// section 2), as it serves it.
func (s *Server) Metadata() map[string]any {
	return map[string]any{
		"issuer":                                s.Issuer,
		"authorization_endpoint":                s.AuthURL,
		"token_endpoint":                        s.TokenURL,
		"token_endpoint_auth_methods_supported": s.AuthMethods,
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token", DeviceGrantType},
		"device_authorization_endpoint":         s.DeviceAuthURL,
		"code_challenge_methods_supported":      []string{"S256"},
		// RFC 9207 section 3: the server promises iss on every
		// authorization response, so a client must refuse one without it.
		"authorization_response_iss_parameter_supported": true,
	}
}

func (s *Server) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.Metadata())
}

// serveResource is a protected resource: 200 for an active access token
// in an Authorization: Bearer header (RFC 6750 section 2.1), else 401
// with error="invalid_token" (section 3.1).
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !s.Active(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
}

// Active reports whether tok is an access token the server issued that
// has neither expired nor been revoked. Expiry has no tolerance: a token
// issued with expires_in 1 is inactive one second after issue on the
// server's clock.
func (s *Server) Active(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.access[tok]
	if a == nil || a.grant.revoked {
		return false
	}
	return a.expiry.IsZero() || s.now().Before(a.expiry)
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
// redirect URI, as the provider would redirect back with them (with iss,
// [Server.Issuer]: [Server.Redirect] gives the whole redirect).
func (s *Server) Authorize(t T, authURL string) (state, code string) {
	t.Helper()
	q := s.checkAuthURL(t, authURL)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	code = fmt.Sprintf("%s%04d", CodePrefix, s.n)
	s.grants[code] = &grant{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), client: q.Get("client_id")}
	s.seen = append(s.seen, code)
	return q.Get("state"), code
}

// Redirect is Authorize returning the whole redirect the browser is sent
// to: the authorization URL's redirect_uri with code, state and iss (RFC
// 6749 section 4.1.2; iss on every response, RFC 9207 section 2).
func (s *Server) Redirect(t T, authURL string) string {
	t.Helper()
	state, code := s.Authorize(t, authURL)
	return s.redirectTo(t, authURL, url.Values{"code": {code}, "state": {state}, issParameter: {s.Issuer}})
}

// Deny plays the user refusing access: the redirect carries error,
// error_description, state and iss (RFC 6749 section 4.1.2.1; RFC 9207
// section 2 puts iss on error responses too).
func (s *Server) Deny(t T, authURL, errCode, desc string) string {
	t.Helper()
	q := s.checkAuthURL(t, authURL)
	v := url.Values{"error": {errCode}, "state": {q.Get("state")}, issParameter: {s.Issuer}}
	if desc != "" {
		v.Set("error_description", desc)
	}
	return s.redirectTo(t, authURL, v)
}

func (s *Server) redirectTo(t T, authURL string, v url.Values) string {
	t.Helper()
	u, _ := url.Parse(authURL)
	to, err := url.Parse(u.Query().Get("redirect_uri"))
	if err != nil || to.Scheme == "" || to.Host == "" {
		t.Errorf("authorization URL has no absolute redirect_uri: %q", u.Query().Get("redirect_uri"))
		t.FailNow()
	}
	q := to.Query()
	for k, vs := range v {
		q[k] = vs
	}
	to.RawQuery = q.Encode()
	return to.String()
}

func (s *Server) checkAuthURL(t T, authURL string) url.Values {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Errorf("authorization URL %q does not parse: %v", authURL, err)
		t.FailNow()
	}
	q := u.Query()
	s.mu.Lock()
	_, known := s.clients[q.Get("client_id")]
	s.mu.Unlock()
	want := s.ClientID
	if known {
		want = q.Get("client_id") // a client AddClient registered
	}
	for _, c := range []struct{ param, got, want string }{
		{"response_type", q.Get("response_type"), "code"},
		{"client_id", q.Get("client_id"), want},
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
	return q
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
	for _, v := range []string{req.Code, req.Verifier, f.Get("refresh_token"), f.Get("device_code")} {
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
	client, ok := s.clientAuthenticated(w, req)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var g *grant
	switch req.GrantType {
	case "authorization_code":
		if g = s.redeem(w, req, client); g == nil {
			return
		}
	case "refresh_token":
		rt := s.refresh[f.Get("refresh_token")]
		switch {
		case rt == nil || rt.grant.revoked:
			WriteError(w, http.StatusBadRequest, "invalid_grant", "refresh token unknown or revoked")
			return
		case rt.grant.client != "" && rt.grant.client != client:
			// RFC 6749 section 6: the refresh token must have been
			// issued to the authenticated client.
			WriteError(w, http.StatusBadRequest, "invalid_grant", "refresh token was issued to another client")
			return
		case rt.used:
			// RFC 9700 section 4.14.2: a rotated refresh token presented
			// again means it leaked; the server cannot tell who holds the
			// good one, so it revokes them all.
			rt.grant.revoked = true
			WriteError(w, http.StatusBadRequest, "invalid_grant", "refresh token already used; the grant is revoked")
			return
		}
		rt.used = true // rotation: a refresh token is good once
		g = rt.grant
	case DeviceGrantType:
		if !s.pollDevice(w, f.Get("device_code"), client) {
			return
		}
		g = &grant{unbound: true, used: true, client: client}
	default:
		WriteError(w, http.StatusBadRequest, "unsupported_grant_type", req.GrantType)
		return
	}
	s.n++
	tokens := []string{fmt.Sprintf("ACCESS-TOKEN-S3CR3T-%04d", s.n)}
	body := map[string]any{"access_token": tokens[0], "token_type": "Bearer"}
	at := &accessToken{grant: g}
	if s.expiresIn > 0 {
		body["expires_in"] = s.expiresIn
		at.expiry = s.now().Add(time.Duration(s.expiresIn) * time.Second)
	}
	s.access[tokens[0]] = at
	if !s.noRefresh {
		rt := fmt.Sprintf("REFRESH-TOKEN-S3CR3T-%04d", s.n)
		s.refresh[rt] = &refreshToken{grant: g}
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

// refuseClient answers invalid_client with HTTP 401 (RFC 6749 section
// 5.2), and a WWW-Authenticate challenge when the client tried Basic.
func refuseClient(w http.ResponseWriter, triedBasic bool, desc string) bool {
	if triedBasic {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
	}
	WriteError(w, http.StatusUnauthorized, "invalid_client", desc)
	return false
}

// clientAuthenticated checks the client's credentials by the method the
// request uses, which must be one the server advertises, and answers
// invalid_client when they are wrong. It returns the client's id.
func (s *Server) clientAuthenticated(w http.ResponseWriter, req Request) (string, bool) {
	method := MethodNone
	switch {
	case req.HasBasic && req.Form.Has("client_secret"):
		// RFC 6749 section 2.3: a client MUST NOT use more than one
		// authentication method in a request.
		return "", refuseClient(w, true, "more than one client authentication method in one request")
	case req.HasBasic:
		method = MethodBasic
	case req.Form.Has("client_secret"):
		method = MethodPost
	}
	if !slices.Contains(s.AuthMethods, method) {
		// RFC 8414 section 2: the methods it supports are the ones it
		// advertises; anything else is a client guessing.
		return "", refuseClient(w, req.HasBasic, fmt.Sprintf("client authentication method %s is not supported (supported: %s)", method, strings.Join(s.AuthMethods, ", ")))
	}
	id, secret := req.Form.Get("client_id"), req.Form.Get("client_secret")
	switch method {
	case MethodBasic:
		// RFC 6749 section 2.3.1: the id and secret are form-encoded, then
		// used as the Basic user and password.
		var err1, err2 error
		id, err1 = url.QueryUnescape(req.BasicUser)
		secret, err2 = url.QueryUnescape(req.BasicPass)
		if err1 != nil || err2 != nil {
			return "", refuseClient(w, true, "Basic credentials are not form-encoded")
		}
		if fid := req.Form.Get("client_id"); fid != "" && fid != id {
			return "", refuseClient(w, true, "client_id in the form is not the Basic user")
		}
		if secret == "" {
			// RFC 6749 section 5.2: an empty password authenticates
			// nobody; a public client uses none and sends no Basic header.
			return "", refuseClient(w, true, "client_secret must be provided in the Authorization header; a public client sends none")
		}
	case MethodPost:
		if secret == "" {
			return "", refuseClient(w, false, "empty client_secret")
		}
	case MethodNone:
		// RFC 6749 section 3.2.1: a confidential client must authenticate;
		// only a public client identifies itself by client_id alone.
		s.mu.Lock()
		known, ok := s.clients[id]
		s.mu.Unlock()
		if !ok || known != "" {
			return "", refuseClient(w, false, "client authentication required")
		}
		if id == "" {
			return "", refuseClient(w, false, "a public client sends its client_id")
		}
	}
	s.mu.Lock()
	want, ok := s.clients[id]
	s.mu.Unlock()
	if !ok || secret != want {
		return "", refuseClient(w, req.HasBasic, "wrong client credentials")
	}
	return id, true
}

// redeem spends an authorization code and returns its grant, or answers
// invalid_grant saying why it cannot be and returns nil. The caller holds
// mu.
func (s *Server) redeem(w http.ResponseWriter, req Request, client string) *grant {
	g := s.grants[req.Code]
	if g == nil && req.Code != "" && s.accept != nil && s.accept(req.Code) {
		g = &grant{unbound: true}
		s.grants[req.Code] = g
	}
	switch {
	case g == nil:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
		return nil
	case g.client != "" && g.client != client:
		// RFC 6749 section 4.1.3: the code must have been issued to the
		// authenticated client. Refused before it counts as used: the
		// client it was issued to may still redeem it.
		WriteError(w, http.StatusBadRequest, "invalid_grant", "code was issued to another client")
		return nil
	case g.used:
		// RFC 6749 section 4.1.2: a code used more than once is refused,
		// and the tokens already issued from it SHOULD be revoked.
		g.revoked = true
		WriteError(w, http.StatusBadRequest, "invalid_grant", "code already redeemed; its tokens are revoked")
		return nil
	case g.unbound && req.Verifier == "":
		WriteError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return nil
	case !g.unbound && S256(req.Verifier) != g.challenge:
		// RFC 7636 section 4.6.
		WriteError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return nil
	case !g.unbound && req.RedirectURI != g.redirectURI:
		// RFC 6749 section 4.1.3: redirect_uri must match the authorization request's.
		WriteError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
		return nil
	}
	g.used = true
	return g
}

// WriteError answers an OAuth error response (RFC 6749 §5.2): a JSON body
// with error and error_description.
func WriteError(w http.ResponseWriter, status int, errCode, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": errCode, "error_description": desc})
}

// DeviceGrantType is the grant_type of a device access token request (RFC 8628 section 3.4).
const DeviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// SetDeviceCodeLifetime sets the expires_in of later device authorizations
// (default 10 minutes).
func (s *Server) SetDeviceCodeLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deviceExpires = d
}

// SetDevicePollInterval sets the interval of later device authorizations
// (default 5 seconds); 0 leaves it out of the response, and the client
// must use 5 (RFC 8628 section 3.2).
func (s *Server) SetDevicePollInterval(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deviceInterval, s.noInterval = d, d == 0
	if d == 0 {
		s.deviceInterval = 5 * time.Second
	}
}

// SlowDownNext makes the next device poll that would be answered
// authorization_pending be answered slow_down instead, raising that
// device code's interval by 5 seconds, as a loaded server does.
func (s *Server) SlowDownNext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowDownNext = true
}

// ApproveDevice plays the user entering userCode at the verification URI
// and approving; DenyDevice plays them refusing. Either reports false for
// a user code the server did not issue.
func (s *Server) ApproveDevice(userCode string) bool { return s.decideDevice(userCode, true) }

// DenyDevice: see ApproveDevice.
func (s *Server) DenyDevice(userCode string) bool { return s.decideDevice(userCode, false) }

func (s *Server) decideDevice(userCode string, approve bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.byUserCode[userCode]
	if g == nil {
		return false
	}
	g.approved, g.denied = approve, !approve
	return true
}

// Device returns what the server knows of the device authorization whose
// user code is userCode, and false if it issued none.
func (s *Server) Device(userCode string) (DeviceState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.byUserCode[userCode]
	if g == nil {
		return DeviceState{}, false
	}
	return DeviceState{UserCode: g.userCode, Polls: g.polls, SlowDowns: g.slowDowns, Interval: g.interval, Spent: g.spent}, true
}

// DevicePolls is how many device access token requests reached the token endpoint.
func (s *Server) DevicePolls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.devicePolls
}

// serveDeviceAuth is the device authorization endpoint (RFC 8628 section
// 3.1): POST only, a form with client_id and an optional scope; a
// confidential client authenticates exactly as at the token endpoint.
func (s *Server) serveDeviceAuth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		WriteError(w, http.StatusMethodNotAllowed, "invalid_request", "the device authorization endpoint takes POST (RFC 8628 section 3.1)")
		return
	}
	if err := r.ParseForm(); err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	req := Request{Form: r.PostForm}
	req.BasicUser, req.BasicPass, req.HasBasic = r.BasicAuth()
	if !req.HasBasic && r.PostForm.Get("client_id") == "" {
		// Section 3.1: client_id is REQUIRED unless the client authenticates.
		WriteError(w, http.StatusBadRequest, "invalid_request", "client_id is required (RFC 8628 section 3.1)")
		return
	}
	client, ok := s.clientAuthenticated(w, req)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	dc, uc := fmt.Sprintf("DEVICE-CODE-S3CR3T-%04d", s.n), fmt.Sprintf("USER-%04d", s.n)
	g := &deviceGrant{userCode: uc, client: client, expires: s.now().Add(s.deviceExpires), interval: s.deviceInterval}
	s.devices[dc], s.byUserCode[uc] = g, g
	s.seen = append(s.seen, dc, uc)
	body := map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": s.VerificationURI,
		"verification_uri_complete": s.VerificationURI + "?user_code=" + uc,
		"expires_in":                int(s.deviceExpires / time.Second),
	}
	if !s.noInterval {
		body["interval"] = int(s.deviceInterval / time.Second)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

// pollDevice answers a device access token request (RFC 8628 section 3.5)
// strictly: a poll sooner than the code's interval after the last one is
// slow_down (and the interval grows by 5 seconds for good), an expired
// code is expired_token, a spent or unknown one invalid_grant. It reports
// whether a token may be issued. The caller holds mu.
func (s *Server) pollDevice(w http.ResponseWriter, code, client string) bool {
	s.devicePolls++
	g := s.devices[code]
	now := s.now()
	if g == nil {
		WriteError(w, http.StatusBadRequest, "invalid_grant", "unknown device code")
		return false
	}
	if g.client != client {
		// RFC 8628 section 3.4: the device code was issued to another client.
		WriteError(w, http.StatusBadRequest, "invalid_grant", "device code was issued to another client")
		return false
	}
	g.polls++
	last := g.lastPoll
	g.lastPoll = now
	switch {
	case g.spent:
		WriteError(w, http.StatusBadRequest, "invalid_grant", "device code already redeemed")
		return false
	case !now.Before(g.expires):
		WriteError(w, http.StatusBadRequest, "expired_token", "the device code has expired")
		return false
	case g.denied:
		WriteError(w, http.StatusBadRequest, "access_denied", "the user denied the request")
		return false
	case !last.IsZero() && now.Sub(last) < g.interval:
		g.interval += 5 * time.Second
		g.slowDowns++
		WriteError(w, http.StatusBadRequest, "slow_down", "polling too often")
		return false
	case s.slowDownNext && !g.approved:
		s.slowDownNext = false
		g.interval += 5 * time.Second
		g.slowDowns++
		WriteError(w, http.StatusBadRequest, "slow_down", "slow down")
		return false
	case !g.approved:
		WriteError(w, http.StatusBadRequest, "authorization_pending", "the user has not yet approved")
		return false
	}
	g.spent = true
	return true
}
