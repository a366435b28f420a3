package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/flowdhq/flowd/engine/mcpauth"
	"github.com/flowdhq/flowd/states"
)

// MCPConfig configures connects by MCP server URL (StartRequest.Resource):
// how flowd's client is registered at an authorization server discovery
// finds. The ladder, per authorization server: a client of Clients; else
// the Client ID Metadata Document at ClientMetadataURL, when the server
// supports them; else a client registered earlier by Dynamic Client
// Registration; else a new registration (RFC 7591).
type MCPConfig struct {
	// ClientName is the client_name flowd registers. Default "flowd".
	ClientName string
	// ClientMetadataURL is the https URL of flowd's Client ID Metadata
	// Document, used as client_id where the server supports them. Empty
	// skips that step.
	ClientMetadataURL string
	// Clients are pre-registered clients.
	Clients []MCPClient
	// NoOfflineAccess stops flowd from adding offline_access to the scopes
	// when the authorization server lists it (SEP-2207).
	NoOfflineAccess bool
}

// MCPClient is a client registered out of band at an authorization server.
type MCPClient struct {
	// Server is the authorization server's issuer, or the MCP server URL,
	// the client is for.
	Server       string
	ClientID     string
	ClientSecret string
	// AuthMethod is the token endpoint auth method (mcpauth.Auth*); empty
	// chooses from the server's metadata.
	AuthMethod string
}

// MCPConnection is what flowd keeps about a connect by MCP server URL: the
// discovered endpoints and the client used. It carries no secret.
type MCPConnection struct {
	// Resource is the MCP server URL, canonical: the provider name of its
	// flows and tokens.
	Resource string `json:"resource"`
	// ResourceIndicator is the resource parameter sent (RFC 8707).
	ResourceIndicator string `json:"resource_indicator"`
	AuthServer        string `json:"auth_server"`
	AuthURL           string `json:"auth_url"`
	TokenURL          string `json:"token_url"`
	ClientID          string `json:"client_id"`
	Registration      string `json:"registration"`
	TokenAuth         string `json:"token_auth"`
	// IssInRedirect is RFC 9207's flag from the server's metadata.
	IssInRedirect bool `json:"iss_in_redirect,omitempty"`
}

// Errors of connects by MCP server URL, besides mcpauth's discovery errors
// (mcpauth.ErrResourceMismatch, mcpauth.ErrNoS256, ...), which Start
// returns wrapped.
var (
	// ErrNoClient: the authorization server offers neither Client ID
	// Metadata Documents (or none is configured) nor dynamic registration,
	// and no pre-registered client is configured for it.
	ErrNoClient = errors.New("no way to register a client")
	// ErrStepUpFutile: the resource asked for scopes the stored token was
	// already granted; another authorization would ask for the same again.
	ErrStepUpFutile = errors.New("step-up would not add a scope")
)

// Registration ways, as records name them.
const (
	RegisteredPre     = "pre_registered"
	RegisteredCIMD    = "client_id_metadata_document"
	RegisteredDynamic = "dynamic"
	RegisteredReused  = "dynamic_reused"
)

// Sealed secrets of MCP connects.
const (
	mcpConnPrefix   = "mcp/conn/"
	mcpClientPrefix = "mcp/client/"
	mcpIndexKey     = "mcp/index"
)

// mcpClientRecord is a registered client, sealed per authorization server.
type mcpClientRecord struct {
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret,omitempty"`
	TokenAuth    string   `json:"token_auth"`
	RedirectURIs []string `json:"redirect_uris"`
}

// IsResourceURL reports whether name is an MCP server URL rather than a
// provider name.
func IsResourceURL(name string) bool {
	return strings.HasPrefix(name, "https://") || strings.HasPrefix(name, "http://")
}

// startMCP discovers the authorization server of req.Resource, registers
// or reuses a client there, and returns the provider to start the flow
// against, with the scopes to request and the created record's data.
func (e *Engine) startMCP(ctx context.Context, req StartRequest, redirect string) (*provider, []string, states.Data, error) {
	// One connect per resource discovers and registers at a time: two
	// first connects at once would register two clients, and the second
	// would replace the connection the first flow's exchange needs.
	if canon, err := mcpauth.CanonicalResource(req.Resource); err == nil {
		mu, _ := e.mcpStarting.LoadOrStore(canon, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
	}
	disc, err := mcpauth.Discover(ctx, e.http, req.Resource, mcpauth.Options{Challenge: req.Challenge, OfflineAccess: !e.cfg.MCP.NoOfflineAccess})
	if err != nil {
		return nil, nil, states.Data{}, fmt.Errorf("start %s: discover: %w", req.Resource, err)
	}
	conn, client, err := e.mcpRegister(ctx, disc, redirect)
	if err != nil {
		return nil, nil, states.Data{}, fmt.Errorf("start %s: %w", disc.Resource, err)
	}
	scopes, source := disc.Scopes, disc.ScopeSource
	if len(req.Scopes) > 0 {
		scopes, source = req.Scopes, "requested"
	}
	if disc.Challenge.Error == "insufficient_scope" {
		// Step-up: the new token must keep what the old one could do.
		if st, err := e.tokens.LoadToken(ctx, TokenKey{Provider: disc.Resource, Account: req.Account}); err == nil {
			union := slices.Clone(st.Scopes)
			for _, s := range scopes {
				if !slices.Contains(union, s) {
					union = append(union, s)
				}
			}
			if len(union) == len(st.Scopes) {
				return nil, nil, states.Data{}, fmt.Errorf("start %s: %w: the token already has %s", disc.Resource, ErrStepUpFutile, strings.Join(st.Scopes, " "))
			}
			scopes, source = union, "step_up"
		}
	}
	connJSON, _ := json.Marshal(conn)
	clientJSON, _ := json.Marshal(client)
	secrets := map[string][]byte{mcpConnPrefix + conn.Resource: connJSON}
	if conn.Registration != RegisteredPre && conn.Registration != RegisteredCIMD {
		secrets[mcpClientPrefix+conn.AuthServer] = clientJSON
	}
	e.mcpMu.Lock()
	defer e.mcpMu.Unlock()
	index, err := e.mcpIndex(ctx)
	if err != nil {
		return nil, nil, states.Data{}, fmt.Errorf("start %s: %w", disc.Resource, err)
	}
	if !slices.Contains(index, conn.Resource) {
		index = append(index, conn.Resource)
		sort.Strings(index)
		b, _ := json.Marshal(index)
		secrets[mcpIndexKey] = b
	}
	// The connection and the client are durable before the flow exists,
	// so a restart before the callback finds them.
	if err := e.log.Append(ctx, nil, secrets); err != nil {
		return nil, nil, states.Data{}, fmt.Errorf("start %s: store the connection: %w", disc.Resource, err)
	}
	p := mcpProvider(conn, client.ClientSecret)
	e.mcp[conn.Resource] = p
	steps := make([]string, len(disc.Steps))
	for i, s := range disc.Steps {
		steps[i] = s.String()
	}
	d := states.Data{MCPDiscovery: &states.MCPDiscovery{
		Resource: conn.ResourceIndicator, ResourceMetadataURL: disc.ResourceMetadataURL,
		ServerMetadataURL: disc.ServerMetadataURL, Registration: conn.Registration, ClientID: conn.ClientID,
		TokenAuth: conn.TokenAuth, ScopeSource: source, Discovery: steps,
	}}
	return p, scopes, d, nil
}

// mcpRegister walks the registration ladder for disc's authorization server.
func (e *Engine) mcpRegister(ctx context.Context, disc *mcpauth.Discovery, redirect string) (MCPConnection, mcpClientRecord, error) {
	m := disc.Server
	conn := MCPConnection{
		Resource: disc.Resource, ResourceIndicator: disc.ResourceIndicator, AuthServer: disc.AuthServer,
		AuthURL: m.AuthorizationEndpoint, TokenURL: m.TokenEndpoint, IssInRedirect: m.AuthorizationResponseIssParameterSupported,
	}
	for _, c := range e.cfg.MCP.Clients {
		if c.Server != disc.AuthServer && strings.TrimSuffix(c.Server, "/") != disc.Resource {
			continue
		}
		method := c.AuthMethod
		if method == "" {
			var err error
			if method, err = chooseMCPAuth(m.TokenEndpointAuthMethodsSupported, c.ClientSecret != ""); err != nil {
				return conn, mcpClientRecord{}, fmt.Errorf("pre-registered client %s at %s: %w", c.ClientID, disc.AuthServer, err)
			}
		}
		conn.ClientID, conn.Registration, conn.TokenAuth = c.ClientID, RegisteredPre, method
		return conn, mcpClientRecord{ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenAuth: method}, nil
	}
	if md := e.cfg.MCP.ClientMetadataURL; md != "" && m.ClientIDMetadataDocumentSupported {
		conn.ClientID, conn.Registration, conn.TokenAuth = md, RegisteredCIMD, mcpauth.AuthNone
		return conn, mcpClientRecord{ClientID: md, TokenAuth: mcpauth.AuthNone}, nil
	}
	b, ok, err := e.log.Secret(ctx, mcpClientPrefix+disc.AuthServer)
	if err != nil {
		return conn, mcpClientRecord{}, fmt.Errorf("read the stored client for %s: %w", disc.AuthServer, err)
	}
	var stored mcpClientRecord
	if ok && json.Unmarshal(b, &stored) == nil && stored.ClientID != "" && slices.Contains(stored.RedirectURIs, redirect) {
		conn.ClientID, conn.Registration, conn.TokenAuth = stored.ClientID, RegisteredReused, stored.TokenAuth
		return conn, stored, nil
	}
	if m.RegistrationEndpoint == "" {
		why := "it offers no dynamic client registration"
		switch {
		case !m.ClientIDMetadataDocumentSupported:
			why += " and no client ID metadata documents"
		case e.cfg.MCP.ClientMetadataURL == "":
			why += ", and no client ID metadata document URL is configured"
		}
		return conn, mcpClientRecord{}, fmt.Errorf("%w at %s: %s, and no pre-registered client is configured for it", ErrNoClient, disc.AuthServer, why)
	}
	want := mcpauth.PreferredAuthMethod(m.TokenEndpointAuthMethodsSupported)
	name := e.cfg.MCP.ClientName
	if name == "" {
		name = "flowd"
	}
	rc, err := mcpauth.Register(ctx, e.http, m.RegistrationEndpoint, mcpauth.ClientMetadata{
		ClientName: name, RedirectURIs: []string{redirect}, GrantTypes: []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: want,
	})
	if err != nil {
		return conn, mcpClientRecord{}, err
	}
	method := rc.TokenEndpointAuthMethod
	if method == "" {
		// The server did not say: what its metadata allows, given
		// whether it issued a secret.
		if method, err = chooseMCPAuth(m.TokenEndpointAuthMethodsSupported, rc.ClientSecret != ""); err != nil {
			return conn, mcpClientRecord{}, fmt.Errorf("client %s registered at %s: %w", rc.ClientID, m.RegistrationEndpoint, err)
		}
	}
	if method != mcpauth.AuthNone && rc.ClientSecret == "" {
		return conn, mcpClientRecord{}, fmt.Errorf("%w at %s: registered for %s but issued no client secret", mcpauth.ErrRegistration, m.RegistrationEndpoint, method)
	}
	rec := mcpClientRecord{ClientID: rc.ClientID, ClientSecret: rc.ClientSecret, TokenAuth: method, RedirectURIs: []string{redirect}}
	conn.ClientID, conn.Registration, conn.TokenAuth = rc.ClientID, RegisteredDynamic, method
	return conn, rec, nil
}

// chooseMCPAuth picks the token endpoint auth method with
// ChooseAuthMethod. A registration may hand out a secret the server's
// metadata then offers no way to send (only none): the client is then
// public and the secret unused.
func chooseMCPAuth(supported []string, hasSecret bool) (string, error) {
	m, err := ChooseAuthMethod(supported, hasSecret)
	if err != nil && hasSecret {
		m, err = ChooseAuthMethod(supported, false)
	}
	return string(m), err
}

// mcpProvider is the provider flows of conn run against. The issuer is
// the authorization server discovery checked, so a redirect naming
// another (RFC 9207) is refused as for any provider.
func mcpProvider(conn MCPConnection, secret string) *provider {
	p := Provider{
		Name: conn.Resource, AuthURL: conn.AuthURL, TokenURL: conn.TokenURL, ClientID: conn.ClientID,
		AuthMethod: AuthMethod(conn.TokenAuth), Resource: conn.ResourceIndicator,
		Issuer: conn.AuthServer, RequireIssuer: conn.IssInRedirect,
	}
	if p.AuthMethod != AuthMethodNone {
		p.ClientSecret = secret
	}
	return &provider{Provider: p, oauth: oauthConfig(p)}
}

// resolve returns a configured provider, or the provider of an MCP
// connection (from memory, else from its sealed records: after a restart).
func (e *Engine) resolve(ctx context.Context, name string) (*provider, error) {
	set := e.providers.Load()
	if _, ok := set.byName[name]; ok || !IsResourceURL(name) {
		return e.provider(name)
	}
	canon, err := mcpauth.CanonicalResource(name)
	if err != nil {
		return nil, &UnknownProviderError{Name: name, Known: slices.Clone(set.names)}
	}
	e.mcpMu.Lock()
	defer e.mcpMu.Unlock()
	if p := e.mcp[canon]; p != nil {
		return p, nil
	}
	conn, ok, err := e.mcpConnection(ctx, canon)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &UnknownProviderError{Name: name, Known: slices.Clone(e.providers.Load().names)}
	}
	var secret string
	if b, ok, err := e.log.Secret(ctx, mcpClientPrefix+conn.AuthServer); err != nil {
		return nil, fmt.Errorf("read the client for %s: %w", conn.AuthServer, err)
	} else if ok {
		var c mcpClientRecord
		if json.Unmarshal(b, &c) == nil && c.ClientID == conn.ClientID {
			secret = c.ClientSecret
		}
	}
	for _, c := range e.cfg.MCP.Clients {
		if c.ClientID == conn.ClientID && conn.Registration == RegisteredPre {
			secret = c.ClientSecret
		}
	}
	p := mcpProvider(conn, secret)
	e.mcp[canon] = p
	return p, nil
}

func (e *Engine) mcpConnection(ctx context.Context, resource string) (MCPConnection, bool, error) {
	b, ok, err := e.log.Secret(ctx, mcpConnPrefix+resource)
	if err != nil || !ok {
		return MCPConnection{}, false, err
	}
	var c MCPConnection
	if err := json.Unmarshal(b, &c); err != nil {
		return MCPConnection{}, false, fmt.Errorf("read the MCP connection of %s: %w", resource, err)
	}
	return c, true, nil
}

// mcpIndex is the list of MCP connections' resources. Callers hold mcpMu.
func (e *Engine) mcpIndex(ctx context.Context) ([]string, error) {
	b, ok, err := e.log.Secret(ctx, mcpIndexKey)
	if err != nil {
		return nil, fmt.Errorf("read the MCP connections: %w", err)
	}
	var index []string
	if ok {
		if err := json.Unmarshal(b, &index); err != nil {
			return nil, fmt.Errorf("read the MCP connections: %w", err)
		}
	}
	return index, nil
}

// MCPConnections lists the MCP servers flowd has connected to (or started
// connecting to), sorted by URL.
func (e *Engine) MCPConnections(ctx context.Context) ([]MCPConnection, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	e.mcpMu.Lock()
	index, err := e.mcpIndex(ctx)
	e.mcpMu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]MCPConnection, 0, len(index))
	for _, r := range index {
		c, ok, err := e.mcpConnection(ctx, r)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// resourceTransport adds the resource parameter (RFC 8707) to the form
// body of requests to the token endpoint. x/oauth2 takes extra parameters
// on an exchange but not on a refresh; refreshes of a resource-bound token
// must name the resource too.
type resourceTransport struct {
	base     http.RoundTripper
	tokenURL string
	resource string
}

func (t *resourceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil || !sameEndpoint(req.URL, t.tokenURL) {
		return t.base.RoundTrip(req)
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, err
	}
	if form.Get("resource") == "" {
		form.Set("resource", t.resource)
	}
	enc := form.Encode()
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader([]byte(enc)))
	r.ContentLength = int64(len(enc))
	return t.base.RoundTrip(r)
}

// sameEndpoint reports whether u is the endpoint raw names, up to the
// query.
func sameEndpoint(u *url.URL, raw string) bool {
	t, err := url.Parse(raw)
	return err == nil && strings.EqualFold(u.Scheme, t.Scheme) && strings.EqualFold(u.Host, t.Host) && u.Path == t.Path
}

// tokenClient is the HTTP client for p's token endpoint.
func (e *Engine) tokenClient(p *provider) *http.Client {
	if p.Resource == "" {
		return e.http
	}
	c := *e.http
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &resourceTransport{base: base, tokenURL: p.TokenURL, resource: p.Resource}
	return &c
}
