package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"flowd.local/flowd/engine"
	"flowd.local/flowd/engine/fakeclock"
	"flowd.local/flowd/engine/mcpauth"
	"flowd.local/flowd/persist"
	"flowd.local/flowd/persist/memlog"
	"flowd.local/flowd/states"
)

// fakeMCP is an MCP server and its authorization server on one loopback
// listener, strict where the MCP spec is: the token endpoint demands the
// resource parameter (RFC 8707) and the registered client's secret by
// HTTP Basic, and redeems a code once, only with its PKCE verifier.
type fakeMCP struct {
	t   *testing.T
	srv *httptest.Server

	mu sync.Mutex
	// What the servers publish; tests change them before a connect.
	prmResource   string
	challengeExtr string
	methods       []string
	registrations int
	clients       map[string]string // client_id -> secret
	codes         map[string]fakeCode
	refresh       map[string][]string // refresh token -> scopes
	tokens        int
	// resources are the resource parameters of every token request, by grant type.
	resources map[string][]string
}

type fakeCode struct {
	challenge, clientID, resource string
	scopes                        []string
}

const dcrSecretPrefix = "DCR-S3CR3T-"

func newFakeMCP(t *testing.T) *fakeMCP {
	f := &fakeMCP{t: t, methods: []string{"S256"}, clients: map[string]string{}, codes: map[string]fakeCode{},
		refresh: map[string][]string{}, resources: map[string][]string{}, challengeExtr: `, scope="mcp:read"`}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mcp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata="%s/.well-known/oauth-protected-resource/mcp"%s`, f.srv.URL, f.challengeExtr))
		w.WriteHeader(http.StatusUnauthorized)
	})
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		res := f.prmResource
		if res == "" {
			res = f.srv.URL + "/mcp"
		}
		writeJSONT(w, map[string]any{"resource": res, "authorization_servers": []string{f.srv.URL + "/as"}})
	})
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/as", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSONT(w, map[string]any{
			"issuer": f.srv.URL + "/as", "authorization_endpoint": f.srv.URL + "/as/authorize", "token_endpoint": f.srv.URL + "/as/token",
			"registration_endpoint": f.srv.URL + "/as/register", "code_challenge_methods_supported": f.methods,
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic"}, "response_types_supported": []string{"code"},
		})
	})
	mux.HandleFunc("POST /as/register", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var md struct {
			RedirectURIs []string `json:"redirect_uris"`
			Method       string   `json:"token_endpoint_auth_method"`
		}
		if json.NewDecoder(r.Body).Decode(&md) != nil || len(md.RedirectURIs) == 0 || md.Method != "client_secret_basic" {
			http.Error(w, `{"error":"invalid_client_metadata"}`, http.StatusBadRequest)
			return
		}
		f.registrations++
		id := fmt.Sprintf("dcr-client-%d", f.registrations)
		f.clients[id] = fmt.Sprintf("%s%d", dcrSecretPrefix, f.registrations)
		w.WriteHeader(http.StatusCreated)
		writeJSONT(w, map[string]any{"client_id": id, "client_secret": f.clients[id], "token_endpoint_auth_method": "client_secret_basic"})
	})
	mux.HandleFunc("POST /as/token", f.token)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func writeJSONT(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeMCP) resource() string { return f.srv.URL + "/mcp" }

// authorize plays the user at the authorization endpoint: it checks the
// URL as a strict server would and returns a code bound to it.
func (f *fakeMCP) authorize(authURL string) string {
	f.t.Helper()
	u, err := url.Parse(authURL)
	require.NoError(f.t, err)
	q := u.Query()
	require.Equal(f.t, f.srv.URL+"/as/authorize", u.Scheme+"://"+u.Host+u.Path)
	require.Equal(f.t, "S256", q.Get("code_challenge_method"), "PKCE S256 always")
	require.NotEmpty(f.t, q.Get("code_challenge"))
	require.Equal(f.t, f.resource(), q.Get("resource"), "RFC 8707 resource on the authorization request")
	f.mu.Lock()
	defer f.mu.Unlock()
	_, known := f.clients[q.Get("client_id")]
	require.True(f.t, known, "client_id %q was registered", q.Get("client_id"))
	code := fmt.Sprintf("MCPCODE-S3CR3T-%d", len(f.codes)+1)
	f.codes[code] = fakeCode{challenge: q.Get("code_challenge"), clientID: q.Get("client_id"), resource: q.Get("resource"), scopes: strings.Fields(q.Get("scope"))}
	return code
}

func (f *fakeMCP) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":%q}`, code)
	}
	id, secret, ok := r.BasicAuth()
	if !ok || f.clients[id] != secret || r.PostFormValue("client_secret") != "" {
		fail("invalid_client")
		return
	}
	grant := r.PostFormValue("grant_type")
	f.resources[grant] = append(f.resources[grant], r.PostFormValue("resource"))
	if r.PostFormValue("resource") != f.resource() {
		fail("invalid_target") // RFC 8707 section 2
		return
	}
	var scopes []string
	switch grant {
	case "authorization_code":
		c, ok := f.codes[r.PostFormValue("code")]
		delete(f.codes, r.PostFormValue("code"))
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		if !ok || c.clientID != id || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			fail("invalid_grant")
			return
		}
		scopes = c.scopes
	case "refresh_token":
		s, ok := f.refresh[r.PostFormValue("refresh_token")]
		delete(f.refresh, r.PostFormValue("refresh_token"))
		if !ok {
			fail("invalid_grant")
			return
		}
		scopes = s
	default:
		fail("unsupported_grant_type")
		return
	}
	f.tokens++
	rt := fmt.Sprintf("MCP-REFRESH-S3CR3T-%d", f.tokens)
	f.refresh[rt] = scopes
	writeJSONT(w, map[string]any{"access_token": fmt.Sprintf("MCP-ACCESS-S3CR3T-%d", f.tokens), "token_type": "Bearer",
		"expires_in": 3600, "refresh_token": rt, "scope": strings.Join(scopes, " ")})
}

func (f *fakeMCP) registered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.registrations
}

// mcpEngine opens an engine with no configured providers on log.
func mcpEngine(t *testing.T, log engine.Log, clk *fakeclock.Clock) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Config{Log: log, Clock: clk, ExchangeTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func openDB(t *testing.T, path string) *persist.DB {
	t.Helper()
	db, err := persist.Open(path, persist.Options{})
	require.NoError(t, err)
	return db
}

func TestMCPConnectByResourceURLRecordsWhyItWentWhere(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	log := openDB(t, filepath.Join(t.TempDir(), "flowd.db"))
	t.Cleanup(func() { _ = log.Close() })
	e := mcpEngine(t, log, fakeclock.New(epoch))

	// The URL as a user types it: flowd names the connection canonically.
	st, err := e.Start(ctx, engine.StartRequest{Resource: strings.Replace(f.resource(), "http://127.0.0.1", "HTTP://127.0.0.1", 1) + "/"})
	require.NoError(t, err)
	hist, err := e.History(ctx, st.State)
	require.NoError(t, err)
	d := hist[0].Data
	assert.Equal(t, f.resource(), d.Provider)
	assert.Equal(t, f.resource(), d.Resource)
	assert.Equal(t, f.srv.URL+"/as", d.Issuer, "the authorization server discovery chose is the flow's issuer")
	assert.Equal(t, f.srv.URL+"/.well-known/oauth-protected-resource/mcp", d.ResourceMetadataURL)
	assert.Equal(t, f.srv.URL+"/.well-known/oauth-authorization-server/as", d.ServerMetadataURL)
	assert.Equal(t, engine.RegisteredDynamic, d.Registration)
	assert.Equal(t, "dcr-client-1", d.ClientID)
	assert.Equal(t, "client_secret_basic", d.TokenAuth)
	assert.Equal(t, []string{"mcp:read"}, d.Scopes)
	assert.Equal(t, mcpauth.ScopeFromChallenge, d.ScopeSource)
	require.Len(t, d.Discovery, 3)
	assert.Equal(t, "probe "+f.resource()+" 401 challenged", d.Discovery[0])

	fl, err := e.Callback(ctx, engine.CallbackParams{State: st.State, Code: f.authorize(st.AuthURL), Issuer: f.srv.URL + "/as"})
	require.NoError(t, err)
	require.Equal(t, states.Complete, fl.State, "%s %s", fl.ErrorCode, fl.Message)
	tok, _, err := e.Token(ctx, f.resource())
	require.NoError(t, err)
	assert.Equal(t, "MCP-ACCESS-S3CR3T-1", tok.AccessToken)

	conns, err := e.MCPConnections(ctx)
	require.NoError(t, err)
	require.Len(t, conns, 1)
	assert.Equal(t, f.srv.URL+"/as", conns[0].AuthServer)

	// The export holds the registration as data, never its secret.
	var exported strings.Builder
	require.NoError(t, e.Export(ctx, engine.ExportQuery{}, func(r states.Record) error {
		b, err := r.Encode()
		exported.Write(b)
		return err
	}))
	assert.Contains(t, exported.String(), "dcr-client-1")
	assert.NotContains(t, exported.String(), dcrSecretPrefix)
	assert.NotContains(t, exported.String(), "MCPCODE-S3CR3T")
}

func TestMCPRestartBetweenRegistrationAndCallback(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	path := filepath.Join(t.TempDir(), "flowd.db")
	clk := fakeclock.New(epoch)

	db := openDB(t, path)
	e := mcpEngine(t, db, clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
	require.NoError(t, err)
	code := f.authorize(st.AuthURL)
	require.NoError(t, e.Close())
	require.NoError(t, db.Close())

	// A new process: nothing in memory. The connection and the registered
	// client's secret come back from the sealed store; the token endpoint
	// accepts only that secret, by HTTP Basic, with the resource.
	db = openDB(t, path)
	t.Cleanup(func() { _ = db.Close() })
	e = mcpEngine(t, db, clk)
	fl, err := e.Callback(ctx, engine.CallbackParams{State: st.State, Code: code, Issuer: f.srv.URL + "/as"})
	require.NoError(t, err)
	require.Equal(t, states.Complete, fl.State, "%s %s", fl.ErrorCode, fl.Message)

	// A later connect to the same server reuses the registration.
	st2, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
	require.NoError(t, err)
	hist, err := e.History(ctx, st2.State)
	require.NoError(t, err)
	assert.Equal(t, engine.RegisteredReused, hist[0].Data.Registration)
	assert.Equal(t, "dcr-client-1", hist[0].Data.ClientID)
	assert.Equal(t, 1, f.registered(), "one registration for two connects across a restart")
}

func TestMCPFlowExpiresAndTheRegistrationOutlivesIt(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	clk := fakeclock.New(epoch)
	log := openDB(t, filepath.Join(t.TempDir(), "flowd.db"))
	t.Cleanup(func() { _ = log.Close() })
	e := mcpEngine(t, log, clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.resource(), TTL: time.Minute})
	require.NoError(t, err)
	clk.Advance(time.Minute)
	fl, err := e.Wait(ctx, st.State)
	require.NoError(t, err)
	assert.Equal(t, states.Expired, fl.State)
	_, err = e.Callback(ctx, engine.CallbackParams{State: st.State, Code: f.authorize(st.AuthURL)})
	require.ErrorIs(t, err, engine.ErrNotAwaiting, "a late callback changes nothing")

	st2, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
	require.NoError(t, err)
	fl, err = e.Callback(ctx, engine.CallbackParams{State: st2.State, Code: f.authorize(st2.AuthURL), Issuer: f.srv.URL + "/as"})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, fl.State)
	assert.Equal(t, 1, f.registered())
}

func TestMCPRefusesAServerWithoutS256(t *testing.T) {
	ctx := context.Background()
	for name, methods := range map[string][]string{"plain only": {"plain"}, "no PKCE listed": nil} {
		t.Run(name, func(t *testing.T) {
			f := newFakeMCP(t)
			f.methods = methods
			e := mcpEngine(t, openMem(), fakeclock.New(epoch))
			_, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
			require.ErrorIs(t, err, mcpauth.ErrNoS256)
			assert.Contains(t, err.Error(), "code_challenge_methods_supported")
			flows, err := e.List(ctx, engine.Filter{})
			require.NoError(t, err)
			assert.Empty(t, flows, "nothing started")
			assert.Zero(t, f.registered(), "no client registered at a server flowd refuses")
		})
	}
}

func TestMCPRefusesMetadataNamingAnotherResource(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	f.prmResource = "https://evil.example.com/mcp"
	e := mcpEngine(t, openMem(), fakeclock.New(epoch))
	_, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
	require.ErrorIs(t, err, mcpauth.ErrResourceMismatch)
	assert.Contains(t, err.Error(), "https://evil.example.com/mcp")
	flows, err := e.List(ctx, engine.Filter{})
	require.NoError(t, err)
	assert.Empty(t, flows)
	assert.Zero(t, f.registered())
}

func TestMCPRefreshNamesTheResource(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	clk := fakeclock.New(epoch)
	e := mcpEngine(t, openMem(), clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.resource()})
	require.NoError(t, err)
	_, err = e.Callback(ctx, engine.CallbackParams{State: st.State, Code: f.authorize(st.AuthURL), Issuer: f.srv.URL + "/as"})
	require.NoError(t, err)
	clk.Advance(time.Hour)
	tok, _, err := e.Token(ctx, f.resource())
	require.NoError(t, err)
	assert.Equal(t, "MCP-ACCESS-S3CR3T-2", tok.AccessToken, "refreshed")
	f.mu.Lock()
	defer f.mu.Unlock()
	assert.Equal(t, []string{f.resource()}, f.resources["refresh_token"])
}

func TestMCPStepUpAsksForGrantedAndRequiredScopesOnce(t *testing.T) {
	ctx := context.Background()
	f := newFakeMCP(t)
	e := mcpEngine(t, openMem(), fakeclock.New(epoch))
	connect := func(challenge string) (states.Flow, error) {
		st, err := e.Start(ctx, engine.StartRequest{Resource: f.resource(), Challenge: challenge})
		if err != nil {
			return states.Flow{}, err
		}
		return e.Callback(ctx, engine.CallbackParams{State: st.State, Code: f.authorize(st.AuthURL), Issuer: f.srv.URL + "/as"})
	}
	fl, err := connect("")
	require.NoError(t, err)
	require.Equal(t, []string{"mcp:read"}, fl.GrantedScopes)

	stepUp := fmt.Sprintf(`Bearer error="insufficient_scope", scope="mcp:write", resource_metadata="%s/.well-known/oauth-protected-resource/mcp"`, f.srv.URL)
	fl, err = connect(stepUp)
	require.NoError(t, err)
	assert.Equal(t, []string{"mcp:read", "mcp:write"}, fl.Scopes, "the union of granted and required")
	hist, err := e.History(ctx, fl.ID)
	require.NoError(t, err)
	assert.Equal(t, "step_up", hist[0].Data.ScopeSource)

	// The resource asks again for what the token has: flowd refuses to
	// loop through another authorization.
	_, err = connect(stepUp)
	require.ErrorIs(t, err, engine.ErrStepUpFutile)
	assert.Equal(t, 1, f.registered())
	assert.True(t, slices.Equal(fl.GrantedScopes, []string{"mcp:read", "mcp:write"}))
}

func openMem() engine.Log { return memlog.New() }
