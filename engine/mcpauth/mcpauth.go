// Package mcpauth discovers how to authorize against a remote MCP server
// (Model Context Protocol, spec 2025-11-25, "Authorization"), knowing only
// the server's URL.
//
// The client probes the resource; its 401 names the Protected Resource
// Metadata (RFC 9728) in WWW-Authenticate, or the client looks at the
// well-known URLs, path-based first. The metadata names the authorization
// servers; the first one's metadata (RFC 8414, or OpenID Connect
// Discovery) is found at the well-known URLs the MCP spec lists, in its
// order. Everything tried is kept as a list of [Step]s, so a caller can
// record why a connect went where it went.
//
// A server of the 2025-03-26 spec has no Protected Resource Metadata: it
// is its own authorization server. When every well-known URL of the
// resource metadata answers 404 (and the challenge named none), Discover
// takes the server's origin as the authorization server, as that spec
// says, and when its metadata is missing too (404 at both well-known
// URLs), the spec's default endpoints /authorize, /token and /register at
// that origin, assuming PKCE with S256, which that spec required of every
// client and server. Discovery.Legacy says so, and the Steps record it;
// no resource indicator is sent then (that spec had none).
//
// Discover refuses what is unsafe: a resource whose metadata names another
// resource, an authorization server whose metadata names another issuer,
// and one that does not support PKCE with S256. It uses only the standard
// library, so the engine can depend on it.
package mcpauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Errors a caller can test with errors.Is. Each is returned wrapped with
// the URL and the detail that failed.
var (
	// ErrBadResource: the resource URL is not an absolute https URL (http
	// only for loopback hosts), or has a fragment.
	ErrBadResource = errors.New("not a usable MCP server URL")
	// ErrNoResourceMetadata: no Protected Resource Metadata was found.
	ErrNoResourceMetadata = errors.New("no protected resource metadata")
	// ErrResourceMismatch: the metadata describes another resource than
	// the one asked for (RFC 9728 section 3.3).
	ErrResourceMismatch = errors.New("protected resource metadata names another resource")
	// ErrNoAuthServer: the metadata names no authorization server.
	ErrNoAuthServer = errors.New("no authorization server")
	// ErrNoServerMetadata: no authorization server metadata was found.
	ErrNoServerMetadata = errors.New("no authorization server metadata")
	// ErrIssuerMismatch: the authorization server metadata's issuer is not
	// the authorization server it was fetched for (RFC 8414 section 3.3).
	ErrIssuerMismatch = errors.New("authorization server metadata names another issuer")
	// ErrNoS256: the authorization server does not list S256 in
	// code_challenge_methods_supported; the MCP spec says to refuse.
	ErrNoS256 = errors.New("authorization server does not support PKCE with S256")
	// ErrRegistration: dynamic client registration failed.
	ErrRegistration = errors.New("client registration failed")
)

// maxDocument bounds a metadata document or registration response.
const maxDocument = 1 << 20

// Challenge is a Bearer WWW-Authenticate challenge (RFC 6750 section 3,
// RFC 9728 section 5.1).
type Challenge struct {
	ResourceMetadata string `json:"resource_metadata,omitempty"`
	Scope            string `json:"scope,omitempty"`
	Error            string `json:"error,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Scopes returns the challenge's scope parameter split on spaces.
func (c Challenge) Scopes() []string { return strings.Fields(c.Scope) }

// ParseChallenge reads the Bearer challenge of a WWW-Authenticate header
// value. ok is false when the header has no Bearer challenge.
func ParseChallenge(header string) (c Challenge, ok bool) {
	s := header
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return Challenge{}, false
		}
		scheme, rest, _ := strings.Cut(s, " ")
		params, next := parseParams(rest)
		if strings.EqualFold(scheme, "Bearer") {
			return Challenge{
				ResourceMetadata: params["resource_metadata"],
				Scope:            params["scope"],
				Error:            params["error"],
				ErrorDescription: params["error_description"],
			}, true
		}
		s = next
	}
}

// parseParams reads auth-params (name=token or name="quoted") up to the
// next challenge, and returns them with what follows.
func parseParams(s string) (map[string]string, string) {
	params := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexAny(s, " \t,")
		if eq <= 0 || (sp >= 0 && sp < eq) {
			// A bare token: the next challenge's scheme.
			return params, s
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			val, s = b.String(), s[min(i+1, len(s)):]
		} else {
			end := strings.IndexAny(s, " \t,")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		params[name] = val
	}
}

// ResourceMetadata is Protected Resource Metadata (RFC 9728 section 2).
type ResourceMetadata struct {
	Resource             string   `json:"resource"`
	AuthorizationServers []string `json:"authorization_servers,omitempty"`
	ScopesSupported      []string `json:"scopes_supported,omitempty"`
}

// ServerMetadata is authorization server metadata (RFC 8414 section 2),
// the fields flowd uses.
type ServerMetadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	RegistrationEndpoint              string   `json:"registration_endpoint,omitempty"`
	ScopesSupported                   []string `json:"scopes_supported,omitempty"`
	GrantTypesSupported               []string `json:"grant_types_supported,omitempty"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported,omitempty"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported,omitempty"`
	ClientIDMetadataDocumentSupported bool     `json:"client_id_metadata_document_supported,omitempty"`
	// AuthorizationResponseIssParameterSupported is RFC 9207's flag: the
	// server puts iss in its redirects.
	AuthorizationResponseIssParameterSupported bool `json:"authorization_response_iss_parameter_supported,omitempty"`
}

// Step is one request discovery made and what came of it.
type Step struct {
	// What names the step: probe, resource_metadata, server_metadata, register.
	What   string `json:"what"`
	URL    string `json:"url"`
	Status int    `json:"status,omitempty"`
	// Outcome is "used", "not_found", "skipped", a short error, or for a
	// server of the 2025-03-26 spec "server_origin_2025_03_26" (its origin
	// taken as the authorization server) and "defaults_2025_03_26" (its
	// default endpoints used).
	Outcome string `json:"outcome"`
}

// String renders a step for a record or a log line.
func (s Step) String() string {
	st := ""
	if s.Status != 0 {
		st = fmt.Sprintf(" %d", s.Status)
	}
	return fmt.Sprintf("%s %s%s %s", s.What, s.URL, st, s.Outcome)
}

// Scope sources: where Discovery.Scopes came from (the MCP spec's scope
// selection strategy).
const (
	ScopeFromChallenge       = "www_authenticate"
	ScopeFromScopesSupported = "scopes_supported"
	ScopeOmitted             = "omitted"
)

// Discovery is what Discover found.
type Discovery struct {
	// Resource is the URL asked for, canonical (lower-case scheme and
	// host, no fragment, no trailing slash).
	Resource string
	// ResourceIndicator is the resource parameter (RFC 8707) to send: the
	// metadata's resource, which is Resource or a prefix of it.
	ResourceIndicator string
	// Challenge is the resource's WWW-Authenticate challenge, if it sent one.
	Challenge           Challenge
	ResourceMetadataURL string
	Protected           ResourceMetadata
	// AuthServer is the chosen authorization server's issuer.
	AuthServer        string
	ServerMetadataURL string
	Server            ServerMetadata
	// Scopes to request, and where they came from (Scope* constants).
	Scopes      []string
	ScopeSource string
	// Steps are the requests made, in order.
	Steps []Step
	// Legacy: the server has no Protected Resource Metadata, and was
	// taken as its own authorization server (2025-03-26 spec); with
	// LegacyDefaults, its metadata was missing too and the spec's default
	// endpoints are used.
	Legacy, LegacyDefaults bool
}

// Options tunes Discover.
type Options struct {
	// Challenge is a WWW-Authenticate header the caller already got from
	// the resource (a 401, or a 403 insufficient_scope); Discover then does
	// not probe.
	Challenge string
	// OfflineAccess adds offline_access to the scopes when the
	// authorization server lists it in scopes_supported (SEP-2207), so a
	// refresh token is issued.
	OfflineAccess bool
}

// Discover finds the authorization server of the MCP server at resource
// and its metadata. client makes every request; it should not follow
// redirects to other hosts blindly (the default client is fine).
func Discover(ctx context.Context, client *http.Client, resource string, opts Options) (*Discovery, error) {
	canon, err := CanonicalResource(resource)
	if err != nil {
		return nil, err
	}
	d := &Discovery{Resource: canon}
	header := opts.Challenge
	if header == "" {
		header, err = d.probe(ctx, client)
		if err != nil {
			return d, err
		}
	}
	if c, ok := ParseChallenge(header); ok {
		d.Challenge = c
	}
	if err := d.findResourceMetadata(ctx, client); err != nil {
		if !d.allNotFound("resource_metadata") || d.Challenge.ResourceMetadata != "" {
			return d, err
		}
		d.Legacy, d.AuthServer, d.ResourceIndicator = true, origin(d.Resource), ""
		d.Steps = append(d.Steps, Step{What: "auth_server", URL: d.AuthServer, Outcome: "server_origin_2025_03_26"})
	}
	if err := d.findServerMetadata(ctx, client); err != nil {
		if !d.Legacy || !d.allNotFound("server_metadata") {
			return d, err
		}
		d.useLegacyDefaults()
	}
	switch {
	case len(d.Challenge.Scopes()) > 0:
		d.Scopes, d.ScopeSource = d.Challenge.Scopes(), ScopeFromChallenge
	case len(d.Protected.ScopesSupported) > 0:
		d.Scopes, d.ScopeSource = slices.Clone(d.Protected.ScopesSupported), ScopeFromScopesSupported
	default:
		d.ScopeSource = ScopeOmitted
	}
	if opts.OfflineAccess && len(d.Scopes) > 0 && slices.Contains(d.Server.ScopesSupported, "offline_access") && !slices.Contains(d.Scopes, "offline_access") {
		d.Scopes = append(d.Scopes, "offline_access")
	}
	return d, nil
}

// CanonicalResource checks an MCP server URL and returns its canonical
// form (RFC 8707 section 2; MCP "Canonical Server URI"): lower-case scheme
// and host, no fragment, no trailing slash. http is accepted only for
// loopback hosts.
func CanonicalResource(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrBadResource, raw, err)
	}
	if err := checkURL(u); err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrBadResource, raw, err)
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return "", fmt.Errorf("%w %q: a resource URL has no fragment (RFC 8707)", ErrBadResource, raw)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// checkURL accepts https URLs, and http ones only for loopback hosts.
func checkURL(u *url.URL) error {
	switch {
	case u.Host == "":
		return errors.New("not an absolute URL")
	case strings.EqualFold(u.Scheme, "https"):
		return nil
	case strings.EqualFold(u.Scheme, "http") && Loopback(u.Hostname()):
		return nil
	case strings.EqualFold(u.Scheme, "http"):
		return errors.New("http is allowed only for loopback hosts; use https")
	}
	return fmt.Errorf("scheme %q: use https", u.Scheme)
}

// Loopback reports whether host is localhost or a loopback address.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// probe makes an unauthenticated MCP request (initialize, the first
// request of every MCP client) and returns the WWW-Authenticate header of
// its answer.
func (d *Discovery) probe(ctx context.Context, client *http.Client) (string, error) {
	body := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"flowd","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Resource, strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", d.Resource, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		d.Steps = append(d.Steps, Step{What: "probe", URL: d.Resource, Outcome: "unreachable"})
		return "", fmt.Errorf("probe %s: %w", d.Resource, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDocument))
	resp.Body.Close()
	outcome := "no challenge"
	h := resp.Header.Get("WWW-Authenticate")
	if h != "" {
		outcome = "challenged"
	}
	d.Steps = append(d.Steps, Step{What: "probe", URL: d.Resource, Status: resp.StatusCode, Outcome: outcome})
	return h, nil
}

// resourceMetadataURLs lists where to look for the resource's metadata,
// in the MCP spec's order: the challenge's resource_metadata alone when
// given; else the path-based well-known URL, then the root one (RFC 9728
// section 3.1).
func (d *Discovery) resourceMetadataURLs() ([]string, error) {
	if d.Challenge.ResourceMetadata != "" {
		u, err := url.Parse(d.Challenge.ResourceMetadata)
		if err != nil {
			return nil, fmt.Errorf("%w: resource_metadata %q in WWW-Authenticate: %v", ErrNoResourceMetadata, d.Challenge.ResourceMetadata, err)
		}
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("%w: resource_metadata %q in WWW-Authenticate: %v", ErrNoResourceMetadata, d.Challenge.ResourceMetadata, err)
		}
		return []string{u.String()}, nil
	}
	u, _ := url.Parse(d.Resource)
	origin := u.Scheme + "://" + u.Host
	var urls []string
	if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
		urls = append(urls, origin+"/.well-known/oauth-protected-resource"+p)
	}
	return append(urls, origin+"/.well-known/oauth-protected-resource"), nil
}

func (d *Discovery) findResourceMetadata(ctx context.Context, client *http.Client) error {
	urls, err := d.resourceMetadataURLs()
	if err != nil {
		return err
	}
	var last error
	for _, u := range urls {
		var m ResourceMetadata
		status, err := getJSON(ctx, client, u, &m)
		if err == nil && m.Resource == "" {
			err = errors.New("no resource field")
		}
		if err != nil {
			d.Steps = append(d.Steps, Step{What: "resource_metadata", URL: u, Status: status, Outcome: outcome(status, err)})
			last = err
			continue
		}
		d.Steps = append(d.Steps, Step{What: "resource_metadata", URL: u, Status: status, Outcome: "used"})
		d.ResourceMetadataURL, d.Protected = u, m
		if err := d.checkResource(); err != nil {
			return err
		}
		if len(m.AuthorizationServers) == 0 {
			return fmt.Errorf("%w: the protected resource metadata at %s lists no authorization_servers", ErrNoAuthServer, u)
		}
		d.AuthServer = m.AuthorizationServers[0]
		return nil
	}
	return fmt.Errorf("%w for %s (tried %s): %v", ErrNoResourceMetadata, d.Resource, strings.Join(urls, ", "), last)
}

// checkResource accepts metadata whose resource is the URL asked for or,
// for metadata at the root well-known URL, a same-origin prefix of it at a
// path boundary; it becomes the resource indicator.
func (d *Discovery) checkResource() error {
	got, err := CanonicalResource(d.Protected.Resource)
	if err != nil {
		return fmt.Errorf("%w: metadata at %s names %q: %v", ErrResourceMismatch, d.ResourceMetadataURL, d.Protected.Resource, err)
	}
	if got == d.Resource || strings.HasPrefix(d.Resource, got+"/") {
		d.ResourceIndicator = got
		if got == d.Resource {
			// Send what the metadata says, byte for byte (a trailing
			// slash included): it is the resource's own identifier.
			d.ResourceIndicator = d.Protected.Resource
		}
		return nil
	}
	return fmt.Errorf("%w: asked for %s, but the metadata at %s is for %s; refusing to authorize", ErrResourceMismatch, d.Resource, d.ResourceMetadataURL, d.Protected.Resource)
}

// ServerMetadataURLs lists where an issuer's metadata may be, in the MCP
// spec's order: with a path, OAuth 2.0 metadata with path insertion, then
// OpenID Connect Discovery with path insertion, then with path appending;
// without one, OAuth 2.0 metadata, then OpenID Connect Discovery.
func ServerMetadataURLs(issuer string) ([]string, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, err
	}
	if err := checkURL(u); err != nil {
		return nil, err
	}
	origin := u.Scheme + "://" + u.Host
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	if p == "" {
		return []string{origin + "/.well-known/oauth-authorization-server", origin + "/.well-known/openid-configuration"}, nil
	}
	return []string{
		origin + "/.well-known/oauth-authorization-server" + p,
		origin + "/.well-known/openid-configuration" + p,
		origin + p + "/.well-known/openid-configuration",
	}, nil
}

func (d *Discovery) findServerMetadata(ctx context.Context, client *http.Client) error {
	urls, err := ServerMetadataURLs(d.AuthServer)
	if err != nil {
		return fmt.Errorf("%w: authorization server %q: %v", ErrNoServerMetadata, d.AuthServer, err)
	}
	var last error
	for _, u := range urls {
		var m ServerMetadata
		status, err := getJSON(ctx, client, u, &m)
		if err != nil {
			d.Steps = append(d.Steps, Step{What: "server_metadata", URL: u, Status: status, Outcome: outcome(status, err)})
			last = err
			continue
		}
		d.Steps = append(d.Steps, Step{What: "server_metadata", URL: u, Status: status, Outcome: "used"})
		d.ServerMetadataURL, d.Server = u, m
		return d.checkServer()
	}
	return fmt.Errorf("%w for %s (tried %s): %v", ErrNoServerMetadata, d.AuthServer, strings.Join(urls, ", "), last)
}

func (d *Discovery) checkServer() error {
	m := d.Server
	if m.Issuer != d.AuthServer {
		return fmt.Errorf("%w: %s names issuer %q, want %q; refusing to authorize", ErrIssuerMismatch, d.ServerMetadataURL, m.Issuer, d.AuthServer)
	}
	if !slices.Contains(m.CodeChallengeMethodsSupported, "S256") {
		listed := "does not list code_challenge_methods_supported"
		if len(m.CodeChallengeMethodsSupported) > 0 {
			listed = "lists only " + strings.Join(m.CodeChallengeMethodsSupported, ", ") + " in code_challenge_methods_supported"
		}
		return fmt.Errorf("%w: the metadata at %s %s; refusing to authorize without PKCE S256", ErrNoS256, d.ServerMetadataURL, listed)
	}
	for field, raw := range map[string]string{"authorization_endpoint": m.AuthorizationEndpoint, "token_endpoint": m.TokenEndpoint} {
		u, err := url.Parse(raw)
		if err == nil {
			err = checkURL(u)
		}
		if err != nil {
			return fmt.Errorf("%w: %s in %s is %q: %v", ErrNoServerMetadata, field, d.ServerMetadataURL, raw, err)
		}
	}
	return nil
}

// origin is the scheme and host of a URL Discover already checked.
func origin(raw string) string {
	u, _ := url.Parse(raw)
	return u.Scheme + "://" + u.Host
}

// allNotFound reports whether every step named what answered 404: only
// then is a missing document the server's way of saying it has none,
// rather than a failure to retry.
func (d *Discovery) allNotFound(what string) bool {
	seen := false
	for _, s := range d.Steps {
		if s.What == what {
			if s.Outcome != "not_found" {
				return false
			}
			seen = true
		}
	}
	return seen
}

// useLegacyDefaults is the 2025-03-26 spec's fallback for a server with no
// metadata: its default endpoints at the authorization server's origin.
func (d *Discovery) useLegacyDefaults() {
	o := d.AuthServer
	d.LegacyDefaults = true
	d.Server = ServerMetadata{Issuer: o, AuthorizationEndpoint: o + "/authorize", TokenEndpoint: o + "/token",
		RegistrationEndpoint: o + "/register", CodeChallengeMethodsSupported: []string{"S256"}}
	d.Steps = append(d.Steps, Step{What: "server_metadata", URL: o, Outcome: "defaults_2025_03_26"})
}

func outcome(status int, err error) string {
	if status == http.StatusNotFound {
		return "not_found"
	}
	return clip(err.Error(), 120)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// getJSON GETs u and decodes a 200 JSON answer into v. It returns the
// HTTP status (0 when no answer came).
func getJSON(ctx context.Context, client *http.Client, u string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return resp.StatusCode, fmt.Errorf("not JSON metadata: %v", err)
	}
	return resp.StatusCode, nil
}

// Token endpoint authentication methods (RFC 7591 section 2).
const (
	AuthNone              = "none"
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
)

// ClientMetadata is what flowd registers (RFC 7591 section 2).
type ClientMetadata struct {
	ClientName              string   `json:"client_name,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
}

// RegisteredClient is the registration endpoint's answer (RFC 7591
// section 3.2.1). ClientSecret is a secret: keep it sealed.
type RegisteredClient struct {
	ClientID                string `json:"client_id"`
	ClientSecret            string `json:"client_secret,omitempty"`
	ClientSecretExpiresAt   int64  `json:"client_secret_expires_at,omitempty"`
	TokenEndpointAuthMethod string `json:"token_endpoint_auth_method,omitempty"`
}

// Register registers a client at endpoint (Dynamic Client Registration,
// RFC 7591). The error never carries the response body: it may hold the
// issued secret.
func Register(ctx context.Context, client *http.Client, endpoint string, md ClientMetadata) (RegisteredClient, error) {
	u, err := url.Parse(endpoint)
	if err == nil {
		err = checkURL(u)
	}
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("%w: registration_endpoint %q: %v", ErrRegistration, endpoint, err)
	}
	body, err := json.Marshal(md)
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("%w: %v", ErrRegistration, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("%w: %v", ErrRegistration, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("%w at %s: %v", ErrRegistration, endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument))
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("%w at %s: read the answer: %v", ErrRegistration, endpoint, err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(b, &e)
		return RegisteredClient{}, fmt.Errorf("%w at %s: HTTP %d %s %s", ErrRegistration, endpoint, resp.StatusCode, clip(e.Error, 100), clip(e.Description, 200))
	}
	var rc RegisteredClient
	if err := json.Unmarshal(b, &rc); err != nil || rc.ClientID == "" {
		return RegisteredClient{}, fmt.Errorf("%w at %s: the answer has no client_id", ErrRegistration, endpoint)
	}
	return rc, nil
}

// PreferredAuthMethod is the token endpoint auth method flowd asks to be
// registered with: a confidential method when the server offers one
// (flowd keeps secrets sealed), else none. An empty list means
// client_secret_basic, RFC 8414's default.
func PreferredAuthMethod(supported []string) string {
	if len(supported) == 0 {
		return AuthClientSecretBasic
	}
	for _, m := range []string{AuthClientSecretBasic, AuthClientSecretPost, AuthNone} {
		if slices.Contains(supported, m) {
			return m
		}
	}
	return AuthNone
}
