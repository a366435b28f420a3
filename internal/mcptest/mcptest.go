// Package mcptest is a fake remote MCP server and its authorization
// server for flowd's tests of connects by MCP server URL.
package mcptest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Server is an MCP server and its authorization server on one loopback
// listener, strict where the MCP spec is: the token endpoint demands the
// resource parameter (RFC 8707) and the registered client's secret by
// HTTP Basic, and redeems a code once, only with its PKCE verifier.
type Server struct {
	t *testing.T
	// Srv is the listener; Srv.URL + "/as" is the authorization server.
	Srv *httptest.Server

	// Mu guards the fields below; tests change them before a connect.
	Mu sync.Mutex
	// PRMResource overrides the metadata's resource; ChallengeExtra
	// follows resource_metadata in the 401's challenge; Methods are the
	// code_challenge_methods_supported.
	PRMResource    string
	ChallengeExtra string
	Methods        []string
	// NoRegistration leaves registration_endpoint out of the metadata.
	NoRegistration bool
	registrations  int
	clients        map[string]string // client_id -> secret
	codes          map[string]issuedCode
	refresh        map[string][]string // refresh token -> scopes
	tokens         int
	// Resources are the resource parameters of every token request, by grant type.
	Resources map[string][]string
}

type issuedCode struct {
	challenge, clientID, resource string
	scopes                        []string
}

// DCRSecretPrefix starts every client secret the registration endpoint issues.
const DCRSecretPrefix = "DCR-S3CR3T-"

// New starts a Server on a loopback listener, closed when the test ends.
func New(t *testing.T) *Server {
	f := &Server{t: t, Methods: []string{"S256"}, clients: map[string]string{}, codes: map[string]issuedCode{},
		refresh: map[string][]string{}, Resources: map[string][]string{}, ChallengeExtra: `, scope="mcp:read"`}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mcp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata="%s/.well-known/oauth-protected-resource/mcp"%s`, f.Srv.URL, f.ChallengeExtra))
		w.WriteHeader(http.StatusUnauthorized)
	})
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, r *http.Request) {
		f.Mu.Lock()
		defer f.Mu.Unlock()
		res := f.PRMResource
		if res == "" {
			res = f.Srv.URL + "/mcp"
		}
		writeJSONT(w, map[string]any{"resource": res, "authorization_servers": []string{f.Srv.URL + "/as"}})
	})
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/as", func(w http.ResponseWriter, r *http.Request) {
		f.Mu.Lock()
		defer f.Mu.Unlock()
		md := map[string]any{
			"issuer": f.Srv.URL + "/as", "authorization_endpoint": f.Srv.URL + "/as/authorize", "token_endpoint": f.Srv.URL + "/as/token",
			"registration_endpoint": f.Srv.URL + "/as/register", "code_challenge_methods_supported": f.Methods,
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic"}, "response_types_supported": []string{"code"},
		}
		if f.NoRegistration {
			delete(md, "registration_endpoint")
		}
		writeJSONT(w, md)
	})
	mux.HandleFunc("POST /as/register", func(w http.ResponseWriter, r *http.Request) {
		f.Mu.Lock()
		defer f.Mu.Unlock()
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
		f.clients[id] = fmt.Sprintf("%s%d", DCRSecretPrefix, f.registrations)
		w.WriteHeader(http.StatusCreated)
		writeJSONT(w, map[string]any{"client_id": id, "client_secret": f.clients[id], "token_endpoint_auth_method": "client_secret_basic"})
	})
	mux.HandleFunc("POST /as/token", f.token)
	f.Srv = httptest.NewServer(mux)
	t.Cleanup(f.Srv.Close)
	return f
}

func writeJSONT(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Resource is the MCP server URL.
func (f *Server) Resource() string { return f.Srv.URL + "/mcp" }

// Authorize plays the user at the authorization endpoint: it checks the
// URL as a strict server would and returns a code bound to it.
func (f *Server) Authorize(authURL string) string {
	f.t.Helper()
	u, err := url.Parse(authURL)
	require.NoError(f.t, err)
	q := u.Query()
	require.Equal(f.t, f.Srv.URL+"/as/authorize", u.Scheme+"://"+u.Host+u.Path)
	require.Equal(f.t, "S256", q.Get("code_challenge_method"), "PKCE S256 always")
	require.NotEmpty(f.t, q.Get("code_challenge"))
	require.Equal(f.t, f.Resource(), q.Get("resource"), "RFC 8707 resource on the authorization request")
	f.Mu.Lock()
	defer f.Mu.Unlock()
	_, known := f.clients[q.Get("client_id")]
	require.True(f.t, known, "client_id %q was registered", q.Get("client_id"))
	code := fmt.Sprintf("MCPCODE-S3CR3T-%d", len(f.codes)+1)
	f.codes[code] = issuedCode{challenge: q.Get("code_challenge"), clientID: q.Get("client_id"), resource: q.Get("resource"), scopes: strings.Fields(q.Get("scope"))}
	return code
}

func (f *Server) token(w http.ResponseWriter, r *http.Request) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
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
	f.Resources[grant] = append(f.Resources[grant], r.PostFormValue("resource"))
	if r.PostFormValue("resource") != f.Resource() {
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

// AddClient registers a client out of band (a pre-registered client).
func (f *Server) AddClient(id, secret string) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.clients[id] = secret
}

// Registered counts client registrations.
func (f *Server) Registered() int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.registrations
}
