// Package dextest runs a real OAuth 2.0 / OpenID Connect server, Dex, for
// flowd's end-to-end tests, and plays the browser's part of a login against
// it.
//
// Dex is built from the nested module tools/dex by tools/dex/build.sh into
// $FLOWD_DEX_BIN, else ${XDG_CACHE_HOME:-~/.cache}/flowd/bin/dex. When the
// binary is missing the tests that need it are skipped with the command that
// builds it, except under CI=true, where they fail: CI must not skip what it
// can run.
//
// The token endpoint is also served through a recording proxy
// (Server.TokenURL) so that tests see every authorization code, PKCE
// verifier, client secret and token that crossed the wire, and can assert
// that none of them leaked into a database, a log or an export.
package dextest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowdhq/flowd/internal/syncbuf"
)

// Fixed identities of the Dex instance. They are test fixtures, not secrets
// of anything real.
const (
	// ClientID is the confidential client; it authenticates with ClientSecret.
	ClientID = "flowd-test"
	// ClientSecret is ClientID's secret.
	ClientSecret = "flowd-test-secret-8d1f2c7a9b"
	// PublicClientID is a public client (no secret; PKCE only).
	PublicClientID = "flowd-public"
	// PeerClientID is a client that trusts nobody: requesting a token for it
	// (scope PeerScope) is refused by Dex. See DeniedScope.
	PeerClientID = "flowd-peer"

	// Email, Username and Password are the static user of the password
	// database (connector "local"). The hash in the config is Dex's own
	// example hash of "password".
	Email    = "admin@example.com"
	Username = "admin"
	Password = "password"
	// UserID is the static user's subject.
	UserID = "08a8684b-db88-4b73-90a9-3cd1661f5466"

	// MockConnector logs in without a form (Dex's mockCallback connector);
	// its user is "Kilgore Trout", kilgore@kilgore.trout.
	MockConnector = "mock"
	// LocalConnector is the password database; it serves a login form.
	LocalConnector = "local"

	// DefaultRedirectURI is flowd's default loopback callback.
	DefaultRedirectURI = "http://127.0.0.1:8085/oauth/callback"

	// DeviceCallbackPath is the redirect URI Dex's device flow uses for
	// its own login (relative to the issuer).
	DeviceCallbackPath = "/device/callback"
)

// DeniedScope is a scope Dex refuses to grant: a cross-client audience
// scope for PeerClientID, which does not list ClientID among its trusted
// peers. Dex answers the authorization request by redirecting to the
// redirect URI with error=invalid_scope and the state: a provider-side
// refusal that reaches flowd's callback, the way a user's "Deny" does at
// providers that offer one.
//
// Why not the approval screen: Dex's "Cancel" on its approval page renders
// an error page ("Approval rejected.") and never redirects back, so the
// client is not told (Dex v2.45.1, server/handlers.go handleApproval).
// Browser.Reject reproduces that and reports ErrApprovalRejected.
const DeniedScope = "audience:server:client_id:" + PeerClientID

// Options configure a Dex instance. The zero value is a working default.
type Options struct {
	// ApprovalScreen shows Dex's consent page after login instead of
	// skipping it (oauth2.skipApprovalScreen: false). The browser then
	// approves or rejects according to Browser.Reject.
	ApprovalScreen bool
	// RedirectURIs are registered for every client. Default
	// DefaultRedirectURI.
	RedirectURIs []string
	// AccessTokenTTL is the lifetime of access and ID tokens. Default 24h.
	AccessTokenTTL time.Duration
	// Storage is "memory" (default) or "sqlite3".
	Storage string
}

// Server is a running Dex.
type Server struct {
	// Issuer is the OIDC issuer URL, http://127.0.0.1:<port>/dex.
	Issuer string
	// AuthURL, DexTokenURL, UserinfoURL and DeviceAuthURL (the device
	// authorization endpoint, RFC 8628) come from discovery.
	AuthURL       string
	DexTokenURL   string
	UserinfoURL   string
	DeviceAuthURL string
	// TokenURL is a recording proxy in front of DexTokenURL. Give it to
	// flowd as the token endpoint so Secrets sees what was exchanged.
	TokenURL string
	// RedirectURIs are the registered redirect URIs.
	RedirectURIs []string
	// Secrets collects every secret seen in the run: the client secret,
	// and the codes, verifiers and tokens that crossed the token proxy or
	// the browser.
	Secrets *Secrets

	dir  string
	logs *syncbuf.Buffer

	mu     sync.Mutex
	grants map[string]int // token requests through TokenURL by grant_type
	codes  map[string]int // authorization codes presented through TokenURL
}

// TokenRequests reports how many requests with grant_type grant
// ("authorization_code", "refresh_token") reached Dex through TokenURL.
func (s *Server) TokenRequests(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[grant]
}

// CodesPresented reports how many distinct authorization codes were
// presented to Dex through TokenURL (grant_type authorization_code), and
// how many of them were presented more than once. A code counts when its
// request reaches the proxy, whether or not Dex answered: a client that
// dies mid-exchange has still spent the code.
func (s *Server) CodesPresented() (distinct, twice int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.codes {
		if n > 1 {
			twice++
		}
	}
	return len(s.codes), twice
}

// Binary returns the path of the dex binary. When it is missing the test is
// skipped with the command that builds it, or failed when CI=true.
func Binary(t testing.TB) string {
	t.Helper()
	path := BinaryPath()
	fi, err := os.Stat(path)
	if err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return path
	}
	msg := fmt.Sprintf("dex binary not found at %s; build it with: %s (about 3 minutes the first time)", path, BuildCommand())
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s. CI=true: end-to-end tests must run in CI, not be skipped", msg)
	}
	t.Skip(msg)
	return ""
}

// BinaryPath is where the dex binary is looked for: $FLOWD_DEX_BIN, else
// ${XDG_CACHE_HOME:-~/.cache}/flowd/bin/dex (the same rule as build.sh).
func BinaryPath() string {
	if p := os.Getenv("FLOWD_DEX_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "flowd", "bin", "dex")
}

// BuildCommand is the shell command that builds the dex binary.
func BuildCommand() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "tools/dex/build.sh (from the repository root)"
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "tools", "dex", "build.sh")
}

// Start starts Dex on a free loopback port, waits until it answers
// discovery, and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	if len(opts.RedirectURIs) == 0 {
		opts.RedirectURIs = []string{DefaultRedirectURI}
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = 24 * time.Hour
	}
	if opts.Storage == "" {
		opts.Storage = "memory"
	}
	dir := t.TempDir()

	// Between closing the probe listener and Dex binding the port another
	// process may take it; Dex then exits at once, and a new port is tried.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(t, bin, dir, opts)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("start dex: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, opts Options) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{
		Issuer:       "http://" + addr + "/dex",
		RedirectURIs: opts.RedirectURIs,
		Secrets:      NewSecrets(),
		dir:          dir,
		logs:         &syncbuf.Buffer{},
	}
	s.Secrets.Add("client_secret", ClientSecret)

	cfgPath := filepath.Join(dir, "dex-config.json")
	cfg, err := json.MarshalIndent(s.config(addr, opts), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode dex config: %w", err)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("write dex config: %w", err)
	}

	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.discover(ctx, exited); err != nil {
		stop()
		return nil, fmt.Errorf("%w\ndex output:\n%s", err, s.logs.String())
	}

	proxy := httptest.NewServer(s.tokenProxy())
	s.TokenURL = proxy.URL + "/token"
	t.Cleanup(func() {
		proxy.Close()
		stop()
		if t.Failed() {
			t.Logf("dex output:\n%s", s.logs.String())
		}
	})
	return s, nil
}

// Logs returns what Dex has written so far.
func (s *Server) Logs() string { return s.logs.String() }

func (s *Server) config(addr string, opts Options) map[string]any {
	clients := []map[string]any{
		{
			"id":           ClientID,
			"secret":       ClientSecret,
			"name":         "flowd test (confidential)",
			"redirectURIs": opts.RedirectURIs,
		},
		{
			"id":     PublicClientID,
			"public": true,
			"name":   "flowd test (public)",
			// Dex sends the device flow's login back to its own
			// /device/callback; a public client with registered redirect
			// URIs must list it (Dex v2.45.1, server/oauth2.go
			// validateRedirectURI). Confidential clients cannot use the
			// device flow under an issuer with a path: Dex redirects them
			// to /device/callback without the issuer's path.
			"redirectURIs": append(slices.Clone(opts.RedirectURIs), DeviceCallbackPath),
		},
		{
			"id":           PeerClientID,
			"secret":       "flowd-peer-secret-unused",
			"name":         "flowd test peer that trusts nobody",
			"redirectURIs": opts.RedirectURIs,
		},
	}
	storage := map[string]any{"type": opts.Storage}
	if opts.Storage == "sqlite3" {
		storage["config"] = map[string]any{"file": filepath.Join(s.dir, "dex.db")}
	}
	// JSON is YAML: Dex reads this file as is.
	return map[string]any{
		"issuer":  s.Issuer,
		"storage": storage,
		"web":     map[string]any{"http": addr},
		"logger":  map[string]any{"level": "debug", "format": "text"},
		"oauth2": map[string]any{
			"skipApprovalScreen": !opts.ApprovalScreen,
			"responseTypes":      []string{"code"},
		},
		"expiry": map[string]any{
			"idTokens":     opts.AccessTokenTTL.String(),
			"authRequests": "1h",
			// No reuseInterval: an old refresh token is refused at once,
			// so a second refresh proves the rotated one was kept.
		},
		"staticClients": clients,
		"connectors": []map[string]any{
			{"type": "mockCallback", "id": MockConnector, "name": "Mock"},
		},
		"enablePasswordDB": true,
		"staticPasswords": []map[string]any{{
			"email":    Email,
			"hash":     "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W",
			"username": Username,
			"userID":   UserID,
		}},
	}
}

// discover waits until Dex answers discovery and records its endpoints.
func (s *Server) discover(ctx context.Context, exited <-chan error) error {
	wellKnown := s.Issuer + "/.well-known/openid-configuration"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		doc, err := fetchDiscovery(ctx, wellKnown)
		if err == nil {
			s.AuthURL, s.DexTokenURL, s.UserinfoURL = doc.AuthorizationEndpoint, doc.TokenEndpoint, doc.UserinfoEndpoint
			s.DeviceAuthURL = doc.DeviceAuthorizationEndpoint
			if s.AuthURL == "" || s.DexTokenURL == "" || s.UserinfoURL == "" || s.DeviceAuthURL == "" {
				return fmt.Errorf("dex discovery at %s lacks an endpoint: %+v", wellKnown, doc)
			}
			return nil
		}
		lastErr = err
		select {
		case err := <-exited:
			return fmt.Errorf("dex exited before answering discovery: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("dex did not answer discovery at %s: %v", wellKnown, lastErr)
		case <-tick.C:
		}
	}
}

type discovery struct {
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	UserinfoEndpoint      string `json:"userinfo_endpoint"`
	// DeviceAuthorizationEndpoint is RFC 8628 section 4's metadata.
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
}

func fetchDiscovery(ctx context.Context, u string) (discovery, error) {
	var doc discovery
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return doc, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return doc, fmt.Errorf("discovery: %s", resp.Status)
	}
	return doc, json.NewDecoder(resp.Body).Decode(&doc)
}

// Userinfo calls Dex's userinfo endpoint with accessToken and returns its
// claims. Dex answers only for tokens it issued with scope openid that have
// not expired.
func (s *Server) Userinfo(ctx context.Context, accessToken string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.UserinfoURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("userinfo: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	claims := map[string]any{}
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("userinfo: decode: %w", err)
	}
	return claims, nil
}

// TokenError is an error answer of the token endpoint.
type TokenError struct {
	Status int
	Code   string `json:"error"`
	Desc   string `json:"error_description"`
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("token endpoint: HTTP %d %s: %s", e.Status, e.Code, e.Desc)
}

// Refresh redeems refreshToken for the confidential client directly at Dex
// (not through the proxy), and returns the new token response. A refused
// refresh is a *TokenError.
func (s *Server) Refresh(ctx context.Context, refreshToken string) (map[string]any, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.DexTokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(ClientID), url.QueryEscape(ClientSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		te := &TokenError{Status: resp.StatusCode}
		_ = json.Unmarshal(body, te)
		return nil, te
	}
	out := map[string]any{}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("refresh: decode: %w", err)
	}
	s.Secrets.AddTokenResponse(out)
	return out, nil
}

// tokenProxy forwards to Dex's token endpoint and records the secrets of
// every request and response.
func (s *Server) tokenProxy() http.Handler {
	target, _ := url.Parse(s.DexTokenURL)
	rp := &httputil.ReverseProxy{
		// A client that dies mid-exchange (a crash test's SIGKILL) cancels
		// the proxied request; say so in Dex's output, shown when a test
		// fails, not on the test's stderr.
		ErrorLog: log.New(s.logs, "dextest token proxy: ", log.LstdFlags),
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL = target
			r.Out.Host = target.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			var out map[string]any
			if json.Unmarshal(body, &out) == nil {
				s.Secrets.AddTokenResponse(out)
			}
			return nil
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil {
			s.mu.Lock()
			if s.grants == nil {
				s.grants = map[string]int{}
			}
			s.grants[form.Get("grant_type")]++
			if code := form.Get("code"); form.Get("grant_type") == "authorization_code" && code != "" {
				if s.codes == nil {
					s.codes = map[string]int{}
				}
				s.codes[code]++
			}
			s.mu.Unlock()
			for _, k := range []string{"code", "code_verifier", "client_secret", "refresh_token", "device_code"} {
				s.Secrets.Add(k, form.Get(k))
			}
		}
		if _, pw, ok := r.BasicAuth(); ok {
			if p, err := url.QueryUnescape(pw); err == nil {
				pw = p
			}
			s.Secrets.Add("client_secret", pw)
		}
		rp.ServeHTTP(w, r)
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ErrApprovalRejected is returned by Browser.Authorize when it pressed
// "Cancel" on Dex's approval page: Dex shows an error page and does not
// redirect back to the client.
var ErrApprovalRejected = errors.New("approval rejected on dex's consent page; dex does not redirect back")
