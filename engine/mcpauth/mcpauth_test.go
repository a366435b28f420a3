package mcpauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseChallenge(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   Challenge
		ok     bool
	}{
		{`Bearer resource_metadata="https://r.example/.well-known/oauth-protected-resource", scope="a b"`,
			Challenge{ResourceMetadata: "https://r.example/.well-known/oauth-protected-resource", Scope: "a b"}, true},
		{`Bearer error="insufficient_scope", scope="mcp:admin", error_description="Scope \"upgrade\" will never succeed"`,
			Challenge{Error: "insufficient_scope", Scope: "mcp:admin", ErrorDescription: `Scope "upgrade" will never succeed`}, true},
		// Another scheme first (RFC 9110 section 11.6.1 allows several challenges).
		{`Basic realm="x", Bearer scope=read`, Challenge{Scope: "read"}, true},
		{`bearer`, Challenge{}, true},
		{`Basic realm="x"`, Challenge{}, false},
		{``, Challenge{}, false},
	} {
		got, ok := ParseChallenge(tc.header)
		assert.Equal(t, tc.ok, ok, tc.header)
		assert.Equal(t, tc.want, got, tc.header)
	}
}

func TestServerMetadataURLsInTheSpecsOrder(t *testing.T) {
	got, err := ServerMetadataURLs("https://auth.example.com/tenant1")
	require.NoError(t, err)
	assert.Equal(t, []string{
		"https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
		"https://auth.example.com/.well-known/openid-configuration/tenant1",
		"https://auth.example.com/tenant1/.well-known/openid-configuration",
	}, got)
	got, err = ServerMetadataURLs("https://auth.example.com")
	require.NoError(t, err)
	assert.Equal(t, []string{
		"https://auth.example.com/.well-known/oauth-authorization-server",
		"https://auth.example.com/.well-known/openid-configuration",
	}, got)
	_, err = ServerMetadataURLs("http://auth.example.com")
	assert.Error(t, err, "http only on loopback")
}

func TestCanonicalResource(t *testing.T) {
	got, err := CanonicalResource("HTTPS://MCP.Example.com/Mcp/")
	require.NoError(t, err)
	assert.Equal(t, "https://mcp.example.com/Mcp", got, "scheme and host lower-cased, path kept, trailing slash dropped")
	for _, bad := range []string{"http://mcp.example.com/mcp", "https://mcp.example.com/mcp#x", "mcp.example.com/mcp", "ftp://x/y"} {
		_, err := CanonicalResource(bad)
		assert.ErrorIs(t, err, ErrBadResource, bad)
	}
	_, err = CanonicalResource("http://[::1]:8080/mcp")
	assert.NoError(t, err)
}

// server answers the given paths with JSON and 404 for the rest, and
// records every path asked for.
type server struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string
}

func newServer(t *testing.T, docs func(base string) map[string]any, challenge string) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.asked = append(s.asked, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		if r.Method == http.MethodPost && r.URL.Path == "/mcp" {
			if challenge != "" {
				w.Header().Set("WWW-Authenticate", strings.ReplaceAll(challenge, "BASE", s.URL))
			}
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		doc, ok := docs(s.URL)[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

func asMetadata(base, issuer string) map[string]any {
	return map[string]any{"issuer": issuer, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
		"code_challenge_methods_supported": []string{"S256"}}
}

func TestDiscoverFallsBackToRootMetadataAndPathInsertion(t *testing.T) {
	// No resource_metadata in the challenge: the path-based URL (404),
	// then the root one, whose resource is the origin, a prefix of the
	// URL asked for. The issuer has a path: OAuth metadata with path
	// insertion (404), then OpenID Connect with path insertion.
	s := newServer(t, func(base string) map[string]any {
		return map[string]any{
			"/.well-known/oauth-protected-resource":     map[string]any{"resource": base, "authorization_servers": []string{base + "/tenant1"}, "scopes_supported": []string{"a", "b"}},
			"/.well-known/openid-configuration/tenant1": asMetadata(base, base+"/tenant1"),
		}
	}, "")
	d, err := Discover(context.Background(), s.Client(), s.URL+"/mcp", Options{})
	require.NoError(t, err)
	assert.Equal(t, s.URL, d.ResourceIndicator)
	assert.Equal(t, s.URL+"/tenant1", d.AuthServer)
	assert.Equal(t, []string{"a", "b"}, d.Scopes)
	assert.Equal(t, ScopeFromScopesSupported, d.ScopeSource)
	assert.Equal(t, []string{
		"POST /mcp",
		"GET /.well-known/oauth-protected-resource/mcp",
		"GET /.well-known/oauth-protected-resource",
		"GET /.well-known/oauth-authorization-server/tenant1",
		"GET /.well-known/openid-configuration/tenant1",
	}, s.asked, "the spec's order, and nothing at the root of an issuer with a path")
}

func TestDiscoverUsesTheChallengesMetadataAndScope(t *testing.T) {
	s := newServer(t, func(base string) map[string]any {
		return map[string]any{
			"/custom/prm.json": map[string]any{"resource": base + "/mcp", "authorization_servers": []string{base}, "scopes_supported": []string{"x"}},
			"/.well-known/oauth-authorization-server": func() map[string]any {
				m := asMetadata(base, base)
				m["scopes_supported"] = []string{"x", "offline_access"}
				return m
			}(),
		}
	}, `Bearer resource_metadata="BASE/custom/prm.json", scope="x:narrow"`)
	d, err := Discover(context.Background(), s.Client(), s.URL+"/mcp", Options{OfflineAccess: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"x:narrow", "offline_access"}, d.Scopes, "the challenge's scope first; offline_access as the server lists it")
	assert.Equal(t, ScopeFromChallenge, d.ScopeSource)
	assert.Equal(t, s.URL+"/custom/prm.json", d.ResourceMetadataURL)
}

func TestDiscoverRefusesAnotherIssuer(t *testing.T) {
	s := newServer(t, func(base string) map[string]any {
		return map[string]any{
			"/.well-known/oauth-protected-resource/mcp": map[string]any{"resource": base + "/mcp", "authorization_servers": []string{base}},
			"/.well-known/oauth-authorization-server":   asMetadata(base, "https://attacker.example"),
		}
	}, "")
	_, err := Discover(context.Background(), s.Client(), s.URL+"/mcp", Options{})
	require.ErrorIs(t, err, ErrIssuerMismatch)
}

func TestDiscoverRefusesASiblingPathAsResource(t *testing.T) {
	// /mcp-admin is not under /mcp: a prefix only at a path boundary.
	s := newServer(t, func(base string) map[string]any {
		return map[string]any{
			"/.well-known/oauth-protected-resource/mcp-admin": map[string]any{"resource": base + "/mcp", "authorization_servers": []string{base}},
		}
	}, "")
	_, err := Discover(context.Background(), s.Client(), s.URL+"/mcp-admin", Options{})
	require.ErrorIs(t, err, ErrResourceMismatch)
}

// A server of the 2025-03-26 spec has no Protected Resource Metadata: it
// is its own authorization server, with its metadata at the root of its
// origin, and no resource indicator is sent.
func TestDiscover20250326ServerIsItsOwnAuthorizationServer(t *testing.T) {
	s := newServer(t, func(base string) map[string]any {
		m := asMetadata(base, base)
		m["registration_endpoint"] = base + "/oauth/register"
		return map[string]any{"/.well-known/oauth-authorization-server": m}
	}, `Bearer realm="mcp"`)
	d, err := Discover(context.Background(), s.Client(), s.URL+"/mcp", Options{})
	require.NoError(t, err)
	assert.True(t, d.Legacy)
	assert.False(t, d.LegacyDefaults, "its metadata was found")
	assert.Equal(t, s.URL, d.AuthServer)
	assert.Empty(t, d.ResourceIndicator, "that spec has no resource indicator")
	assert.Equal(t, s.URL+"/oauth/register", d.Server.RegistrationEndpoint)
	assert.Contains(t, d.Steps, Step{What: "auth_server", URL: s.URL, Outcome: "server_origin_2025_03_26"})
}

// Without any metadata, the 2025-03-26 spec's default endpoints at the
// server's origin.
func TestDiscover20250326DefaultEndpoints(t *testing.T) {
	s := newServer(t, func(string) map[string]any { return nil }, "")
	d, err := Discover(context.Background(), s.Client(), s.URL+"/mcp", Options{})
	require.NoError(t, err)
	assert.True(t, d.LegacyDefaults)
	assert.Equal(t, s.URL+"/authorize", d.Server.AuthorizationEndpoint)
	assert.Equal(t, s.URL+"/token", d.Server.TokenEndpoint)
	assert.Equal(t, s.URL+"/register", d.Server.RegistrationEndpoint)
	assert.Equal(t, Step{What: "server_metadata", URL: s.URL, Outcome: "defaults_2025_03_26"}, d.Steps[len(d.Steps)-1])
}

// The fallbacks are for documents the server says it does not have (404
// everywhere), not for failures: a metadata URL the challenge names, or
// one that errs, stops discovery as before.
func TestDiscoverFallsBackOnlyOnNotFound(t *testing.T) {
	named := newServer(t, func(string) map[string]any { return nil }, `Bearer resource_metadata="BASE/prm.json"`)
	_, err := Discover(context.Background(), named.Client(), named.URL+"/mcp", Options{})
	require.ErrorIs(t, err, ErrNoResourceMetadata, "the challenge named metadata that is missing")

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	_, err = Discover(context.Background(), failing.Client(), failing.URL+"/mcp", Options{})
	require.ErrorIs(t, err, ErrNoResourceMetadata, "a 503 is not a server without metadata")

	// Metadata found for the resource, but its authorization server has
	// none: no defaults for a server of the current spec.
	current := newServer(t, func(base string) map[string]any {
		return map[string]any{"/.well-known/oauth-protected-resource/mcp": map[string]any{"resource": base + "/mcp", "authorization_servers": []string{base}}}
	}, "")
	_, err = Discover(context.Background(), current.Client(), current.URL+"/mcp", Options{})
	require.ErrorIs(t, err, ErrNoServerMetadata)
}
