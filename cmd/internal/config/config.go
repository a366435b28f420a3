// Package config reads flowd's configuration: a TOML file people edit by
// hand (docs/config.md, docs/flowd.example.toml), with built-in endpoint
// presets for common providers and OIDC discovery for the rest.
//
// Load only parses and checks; it does no network I/O. Resolve then fills
// the endpoints of providers configured by issuer, with a timeout. Every
// error names the file, the field and the reason, so flowd can stop with a
// message the user can act on.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/flowdhq/flowd/engine"
)

// Defaults of the settings a config file may leave out.
const (
	DefaultListen    = "127.0.0.1:8085"
	DefaultTTL       = 5 * time.Minute
	DefaultRetention = 7 * 24 * time.Hour
	// MaxTTL bounds ttl: a flow is a person at a browser, not a batch job.
	MaxTTL = 24 * time.Hour
)

// Config is flowd's configuration after Load.
type Config struct {
	// File is the file it was read from, or "" when none exists.
	File string
	// Listen is the loopback listener's host:port.
	Listen string
	// PublicBaseURL is the gateway's public base URL; "" disables the
	// gateway transport. No trailing slash.
	PublicBaseURL string
	// TTL is how long a flow waits for its callback.
	TTL time.Duration
	// Retention is how long finished flows' records are kept; negative keeps them.
	Retention time.Duration
	// ServiceTokenFile holds the gateway's bearer token; "" means
	// service_token in the state directory, generated at first start.
	ServiceTokenFile string
	// StateDir and Socket are set when the file sets them ("" otherwise);
	// flags and environment win over them.
	StateDir string
	Socket   string
	// Store is the event log's store when the file sets it ("bbolt" or
	// "etcd"; "" otherwise), and Etcd the cluster's settings ([etcd]):
	// flags and environment win over both.
	Store string
	Etcd  Etcd
	// Providers, sorted by name.
	Providers []Provider
	// MCP configures connects by MCP server URL.
	MCP engine.MCPConfig
}

// Etcd is the [etcd] table: the etcd cluster flowd replicas share in
// cluster mode (store = "etcd"). Paths are used as written.
type Etcd struct {
	Endpoints   []string
	Prefix      string
	Cert        string
	Key         string
	CA          string
	SealKeyFile string
}

// Stores flowd can keep its event log in.
const (
	StoreBbolt = "bbolt"
	StoreEtcd  = "etcd"
)

// Provider is one configured authorization server.
type Provider struct {
	Name   string
	Preset string
	// Issuer is set for providers configured by OIDC discovery.
	Issuer   string
	AuthURL  string
	TokenURL string
	ClientID string
	// ClientSecret is the secret itself, read from the file or from the
	// environment variable ClientSecretEnv names. Never log it.
	ClientSecret    string
	ClientSecretEnv string
	Scopes          []string
	AuthParams      map[string]string
	// AuthMethod is the token endpoint auth method (none,
	// client_secret_basic, client_secret_post); "" only until Resolve for
	// discovered providers. AuthMethodFrom says where it came from.
	AuthMethod     string
	AuthMethodFrom string
	// RequireIssuer: discovery found authorization_response_iss_parameter_supported,
	// so every redirect must carry iss = Issuer (RFC 9207).
	RequireIssuer bool
	// DeviceAuthURL is the device authorization endpoint (RFC 8628): from
	// the preset, the config (device_auth_url) or discovery
	// (device_authorization_endpoint); empty when there is none.
	DeviceAuthURL string
	// UserInfoURL is where flowd reads who signed in with the new access
	// token (the userinfo_url setting, or a preset's). IDTokenIssuer and
	// JWKSURL verify ID tokens (from a preset, or discovered from issuer).
	// When a flow asks for openid and both are known, the ID token decides;
	// otherwise UserInfoURL does; with neither, flowd identifies no one.
	UserInfoURL   string
	IDTokenIssuer string
	JWKSURL       string
	// RevocationURL is the RFC 7009 revocation endpoint disconnect calls:
	// revocation_url, the preset's, or the discovery document's
	// revocation_endpoint. Empty: the provider has none.
	RevocationURL string
}

// Where a provider's AuthMethod came from.
const (
	// FromSetting: token_endpoint_auth_method (or the older auth_style) in the file.
	FromSetting = "setting"
	// FromPreset: chosen from what the preset's provider supports.
	FromPreset = "preset"
	// FromDiscovery: chosen from the issuer's token_endpoint_auth_methods_supported.
	FromDiscovery = "discovery"
	// FromDefault: explicit endpoints and no setting: client_secret_basic
	// with a secret (RFC 6749 section 2.3.1), none without.
	FromDefault = "default"
)

// LogValue keeps the client secret out of logs even when a Provider is
// logged whole.
func (p Provider) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", p.Name), slog.String("preset", p.Preset),
		slog.String("issuer", p.Issuer), slog.String("auth_url", p.AuthURL),
		slog.String("token_url", p.TokenURL), slog.String("device_auth_url", p.DeviceAuthURL), slog.String("client_id", p.ClientID))
}

// String keeps the client secret out of %v and %+v.
func (p Provider) String() string {
	return fmt.Sprintf("provider %s (%s)", p.Name, p.AuthURL)
}

// Engine returns the provider as the engine takes it. Call it after Resolve.
// A provider configured by issuer has its redirects' iss checked against
// the issuer (RFC 9207), and required when discovery said it is sent.
func (p Provider) Engine() engine.Provider {
	return engine.Provider{
		Name: p.Name, AuthURL: p.AuthURL, TokenURL: p.TokenURL, AuthMethod: engine.AuthMethod(p.AuthMethod),
		ClientID: p.ClientID, ClientSecret: p.ClientSecret,
		Issuer: p.Issuer, RequireIssuer: p.RequireIssuer,
		Scopes: slices.Clone(p.Scopes), AuthParams: p.AuthParams, RevocationURL: p.RevocationURL, DeviceAuthURL: p.DeviceAuthURL,
	}
}

// EngineProviders converts every provider for engine.Config.
func (c *Config) EngineProviders() []engine.Provider {
	out := make([]engine.Provider, len(c.Providers))
	for i, p := range c.Providers {
		out[i] = p.Engine()
	}
	return out
}

// Auth styles the older auth_style setting takes: in_header is
// client_secret_basic; in_params is client_secret_post, or none for a
// client without a secret (it sent client_id alone).
const (
	AuthStyleInParams = "in_params"
	AuthStyleInHeader = "in_header"
)

// Error is an invalid configuration: which file, which field, and why.
type Error struct {
	File string
	// Line is the line of a syntax error, or 0.
	Line int
	// Field is the dotted key ("providers.github.client_id"), or "".
	Field  string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// file is the TOML shape. Durations are strings ("5m") decoded by duration.
type file struct {
	Listen           string                  `toml:"listen"`
	PublicBaseURL    string                  `toml:"public_base_url"`
	TTL              *duration               `toml:"ttl"`
	Retention        *duration               `toml:"retention"`
	ServiceTokenFile string                  `toml:"service_token_file"`
	StateDir         string                  `toml:"state_dir"`
	Socket           string                  `toml:"socket"`
	Store            string                  `toml:"store"`
	Etcd             etcdFile                `toml:"etcd"`
	Providers        map[string]providerFile `toml:"providers"`
	MCP              mcpFile                 `toml:"mcp"`
}

// mcpFile is the [mcp] table: how flowd registers its client at the
// authorization servers of MCP servers it connects to by URL.
type mcpFile struct {
	ClientName        string                   `toml:"client_name"`
	ClientMetadataURL string                   `toml:"client_metadata_url"`
	NoOfflineAccess   bool                     `toml:"no_offline_access"`
	Clients           map[string]mcpClientFile `toml:"clients"`
}

// mcpClientFile is a pre-registered client, keyed by the authorization
// server's issuer or the MCP server's URL.
type mcpClientFile struct {
	ClientID        string `toml:"client_id"`
	ClientSecret    string `toml:"client_secret"`
	ClientSecretEnv string `toml:"client_secret_env"`
	AuthMethod      string `toml:"auth_method"`
}

// etcdFile is the [etcd] table.
type etcdFile struct {
	Endpoints   []string `toml:"endpoints"`
	Prefix      string   `toml:"prefix"`
	Cert        string   `toml:"cert"`
	Key         string   `toml:"key"`
	CA          string   `toml:"ca"`
	SealKeyFile string   `toml:"seal_key_file"`
}

type providerFile struct {
	Preset          string            `toml:"preset"`
	Issuer          string            `toml:"issuer"`
	AuthURL         string            `toml:"auth_url"`
	TokenURL        string            `toml:"token_url"`
	ClientID        string            `toml:"client_id"`
	ClientSecret    string            `toml:"client_secret"`
	ClientSecretEnv string            `toml:"client_secret_env"`
	Scopes          *[]string         `toml:"scopes"`
	AuthParams      map[string]string `toml:"auth_params"`
	AuthStyle       string            `toml:"auth_style"`
	AuthMethod      string            `toml:"token_endpoint_auth_method"`
	Tenant          string            `toml:"tenant"`
	DeviceAuthURL   string            `toml:"device_auth_url"`
	UserInfoURL     *string           `toml:"userinfo_url"`
	RevocationURL   string            `toml:"revocation_url"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (write it like \"90s\", \"5m\" or \"168h\")")
	}
	d.Duration = v
	return nil
}

// DefaultPath is $XDG_CONFIG_HOME/flowd/config.toml, else
// ~/.config/flowd/config.toml.
func DefaultPath() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "flowd", "config.toml")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "flowd.toml"
	}
	return filepath.Join(home, ".config", "flowd", "config.toml")
}

// Load reads and checks the file at path. A missing file is not an error
// when missingOK is true (the default path): flowd then runs with no
// providers. getenv resolves client_secret_env; nil means os.Getenv.
func Load(path string, missingOK bool, getenv func(string) string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && missingOK {
		return Parse("", nil, getenv)
	}
	if err != nil {
		return nil, &Error{File: path, Reason: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	return Parse(path, b, getenv)
}

// Parse checks a config file's contents; name is used in errors.
func Parse(name string, data []byte, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	fail := func(field, format string, args ...any) error {
		return &Error{File: name, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	// The shape first (keys known, values of the right type), so errors
	// say what was expected; then the typed decode.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Field: pe.LastKey, Reason: pe.Message}
		}
		return nil, fail("", "%v", err)
	}
	if se := checkShape(raw); se != nil {
		se.File = name
		return nil, se
	}
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Field: pe.LastKey, Reason: pe.Message}
		}
		return nil, fail("", "%v", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fail(keys[0], "unknown setting ("+HelpHint+")")
	}

	c := &Config{File: name, Listen: DefaultListen, TTL: DefaultTTL, Retention: DefaultRetention,
		ServiceTokenFile: f.ServiceTokenFile, StateDir: f.StateDir, Socket: f.Socket,
		Store: f.Store, Etcd: Etcd(f.Etcd)}
	if c.Store != "" && c.Store != StoreBbolt && c.Store != StoreEtcd {
		return nil, fail("store", "%q is not a store: use %q (a file in the state directory) or %q (a cluster shared by replicas)", c.Store, StoreBbolt, StoreEtcd)
	}
	for i, ep := range c.Etcd.Endpoints {
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fail("etcd.endpoints", "item %d is not an http:// or https:// URL (e.g. \"https://etcd-1:2379\")", i+1)
		}
	}
	if f.Listen != "" {
		c.Listen = f.Listen
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || port == "" {
		return nil, fail("listen", "%q is not host:port (e.g. \"127.0.0.1:8085\")", c.Listen)
	}
	if host != "localhost" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fail("listen", "%q is not a loopback address; flowd's listener must stay on this machine (use 127.0.0.1 or ::1, and a gateway for remote callbacks)", c.Listen)
		}
	}
	if f.PublicBaseURL != "" {
		u, err := checkURL(f.PublicBaseURL)
		if err != nil {
			return nil, fail("public_base_url", "%v", err)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fail("public_base_url", "must not have a query or fragment; the redirect URI is <public_base_url>/oauth/callback")
		}
		c.PublicBaseURL = strings.TrimRight(f.PublicBaseURL, "/")
	}
	if f.TTL != nil {
		if f.TTL.Duration < time.Second || f.TTL.Duration > MaxTTL {
			return nil, fail("ttl", "%v is out of range; use between 1s and %v", f.TTL.Duration, MaxTTL)
		}
		c.TTL = f.TTL.Duration
	}
	if f.Retention != nil {
		if f.Retention.Duration == 0 {
			return nil, fail("retention", "0 would delete finished flows at once; use a duration such as \"168h\", or a negative one to keep them for ever")
		}
		c.Retention = f.Retention.Duration
	}

	for name, pf := range f.Providers {
		p, err := provider(name, pf, getenv)
		if err != nil {
			var ce *Error
			if errors.As(err, &ce) {
				ce.File = c.File
				return nil, ce
			}
			return nil, err
		}
		c.Providers = append(c.Providers, p)
	}
	slices.SortFunc(c.Providers, func(a, b Provider) int { return strings.Compare(a.Name, b.Name) })
	if err := c.parseMCP(f.MCP, getenv); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) parseMCP(f mcpFile, getenv func(string) string) error {
	fail := func(field, format string, args ...any) error {
		return &Error{File: c.File, Field: "mcp." + field, Reason: fmt.Sprintf(format, args...)}
	}
	c.MCP = engine.MCPConfig{ClientName: f.ClientName, NoOfflineAccess: f.NoOfflineAccess}
	if f.ClientMetadataURL != "" {
		u, err := url.Parse(f.ClientMetadataURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Path == "" || u.Path == "/" || u.Fragment != "" {
			return fail("client_metadata_url", "%q is not an https URL with a path; a client ID metadata document's URL is its client_id (e.g. \"https://example.com/flowd/client.json\")", f.ClientMetadataURL)
		}
		c.MCP.ClientMetadataURL = f.ClientMetadataURL
	}
	servers := make([]string, 0, len(f.Clients))
	for s := range f.Clients {
		servers = append(servers, s)
	}
	slices.Sort(servers)
	for _, server := range servers {
		cf := f.Clients[server]
		field := fmt.Sprintf("clients.%q.", server)
		if u, err := url.Parse(server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fail(fmt.Sprintf("clients.%q", server), "the key is the authorization server's issuer or the MCP server's URL, an absolute https URL")
		}
		if cf.ClientID == "" {
			return fail(field+"client_id", "required")
		}
		secret := cf.ClientSecret
		if cf.ClientSecretEnv != "" {
			if secret != "" {
				return fail(field+"client_secret_env", "set client_secret or client_secret_env, not both")
			}
			if secret = getenv(cf.ClientSecretEnv); secret == "" {
				return fail(field+"client_secret_env", "environment variable %s is empty or unset", cf.ClientSecretEnv)
			}
		}
		switch cf.AuthMethod {
		case "", "none", "client_secret_basic", "client_secret_post":
		default:
			return fail(field+"auth_method", "%q is not none, client_secret_basic or client_secret_post", cf.AuthMethod)
		}
		if cf.AuthMethod != "" && cf.AuthMethod != "none" && secret == "" {
			return fail(field+"auth_method", "%s needs client_secret or client_secret_env", cf.AuthMethod)
		}
		c.MCP.Clients = append(c.MCP.Clients, engine.MCPClient{Server: strings.TrimSuffix(server, "/"), ClientID: cf.ClientID, ClientSecret: secret, AuthMethod: cf.AuthMethod})
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func provider(name string, pf providerFile, getenv func(string) string) (Provider, error) {
	field := func(k string) string { return "providers." + name + "." + k }
	fail := func(k, format string, args ...any) error {
		return &Error{Field: field(k), Reason: fmt.Sprintf(format, args...)}
	}
	if !nameRE.MatchString(name) {
		return Provider{}, &Error{Field: "providers." + name, Reason: "a provider name is lower-case letters, digits, '-' and '_' (up to 63), starting with a letter or digit"}
	}
	p := Provider{Name: name, Preset: pf.Preset, Issuer: pf.Issuer, ClientID: pf.ClientID,
		ClientSecret: pf.ClientSecret, ClientSecretEnv: pf.ClientSecretEnv}

	// [providers.github] with no preset and no endpoints means the github preset.
	if p.Preset == "" && pf.Issuer == "" && pf.AuthURL == "" && pf.TokenURL == "" {
		if _, ok := Presets[name]; ok {
			p.Preset = name
		}
	}
	if p.Preset != "" {
		pr, ok := Presets[p.Preset]
		if !ok {
			return Provider{}, fail("preset", "unknown preset %q; presets are %s", p.Preset, strings.Join(PresetNames(), ", "))
		}
		if pf.Issuer != "" {
			return Provider{}, fail("issuer", "set either preset or issuer, not both")
		}
		p.AuthURL, p.TokenURL, p.RevocationURL, p.DeviceAuthURL = pr.AuthURL, pr.TokenURL, pr.RevocationURL, pr.DeviceAuthURL
		p.Scopes = slices.Clone(pr.Scopes)
		p.UserInfoURL, p.IDTokenIssuer, p.JWKSURL = pr.UserInfoURL, pr.IDTokenIssuer, pr.JWKSURL
		if len(pr.AuthParams) > 0 {
			p.AuthParams = map[string]string{}
			for k, v := range pr.AuthParams {
				p.AuthParams[k] = v
			}
		}
		if pf.Tenant != "" {
			if p.Preset != "microsoft" {
				return Provider{}, fail("tenant", "only the microsoft preset takes a tenant")
			}
			if !regexp.MustCompile(`^[A-Za-z0-9.-]{1,100}$`).MatchString(pf.Tenant) {
				return Provider{}, fail("tenant", "%q is not a tenant id or domain", pf.Tenant)
			}
			p.AuthURL = strings.Replace(p.AuthURL, "/common/", "/"+pf.Tenant+"/", 1)
			p.TokenURL = strings.Replace(p.TokenURL, "/common/", "/"+pf.Tenant+"/", 1)
			p.DeviceAuthURL = strings.Replace(p.DeviceAuthURL, "/common/", "/"+pf.Tenant+"/", 1)
		}
	} else if pf.Tenant != "" {
		return Provider{}, fail("tenant", "only the microsoft preset takes a tenant")
	}
	// Explicit endpoints override a preset's (self-hosted GitLab, say).
	if pf.AuthURL != "" {
		p.AuthURL = pf.AuthURL
	}
	if pf.TokenURL != "" {
		p.TokenURL = pf.TokenURL
	}
	switch {
	case pf.Issuer != "":
		if pf.AuthURL != "" || pf.TokenURL != "" {
			return Provider{}, fail("issuer", "set either issuer (endpoints are discovered) or auth_url and token_url, not both")
		}
		if _, err := checkURL(pf.Issuer); err != nil {
			return Provider{}, fail("issuer", "%v", err)
		}
	case p.AuthURL == "" && p.TokenURL == "":
		return Provider{}, &Error{Field: "providers." + name, Reason: fmt.Sprintf("no endpoints: set preset (one of %s), issuer, or auth_url and token_url", strings.Join(PresetNames(), ", "))}
	case p.AuthURL == "":
		return Provider{}, fail("auth_url", "required with token_url")
	case p.TokenURL == "":
		return Provider{}, fail("token_url", "required with auth_url")
	}
	if p.AuthURL != "" {
		if _, err := checkURL(p.AuthURL); err != nil {
			return Provider{}, fail("auth_url", "%v", err)
		}
		if _, err := checkURL(p.TokenURL); err != nil {
			return Provider{}, fail("token_url", "%v", err)
		}
	}
	if pf.DeviceAuthURL != "" {
		if _, err := checkURL(pf.DeviceAuthURL); err != nil {
			return Provider{}, fail("device_auth_url", "%v", err)
		}
		p.DeviceAuthURL = pf.DeviceAuthURL
	}
	if pf.UserInfoURL != nil {
		// "" turns a preset's off: flowd then names accounts by what
		// connect asks for.
		p.UserInfoURL = *pf.UserInfoURL
		if p.UserInfoURL != "" {
			if _, err := checkURL(p.UserInfoURL); err != nil {
				return Provider{}, fail("userinfo_url", "%v", err)
			}
		}
	}
	if pf.RevocationURL != "" {
		if _, err := checkURL(pf.RevocationURL); err != nil {
			return Provider{}, fail("revocation_url", "%v", err)
		}
		p.RevocationURL = pf.RevocationURL // a self-hosted server's, or one discovery does not name
	}
	if pf.Scopes != nil {
		p.Scopes = slices.Clone(*pf.Scopes)
	}
	for i, s := range p.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return Provider{}, fail("scopes", "scope %d (%q) is empty or contains spaces; list each scope as its own string", i+1, s)
		}
	}
	for k := range pf.AuthParams {
		switch k {
		case "state", "code_challenge", "code_challenge_method", "redirect_uri", "client_id", "response_type", "scope":
			return Provider{}, fail("auth_params."+k, "flowd sets %s itself; remove it", k)
		}
		if p.AuthParams == nil {
			p.AuthParams = map[string]string{}
		}
		p.AuthParams[k] = pf.AuthParams[k]
	}
	if p.ClientID == "" {
		return Provider{}, fail("client_id", "required: the client id of the OAuth app you registered at the provider")
	}
	if p.ClientSecret != "" && p.ClientSecretEnv != "" {
		return Provider{}, fail("client_secret_env", "set either client_secret or client_secret_env, not both")
	}
	if p.ClientSecretEnv != "" {
		p.ClientSecret = getenv(p.ClientSecretEnv)
		if p.ClientSecret == "" {
			return Provider{}, fail("client_secret_env", "environment variable %s is not set or empty in flowd's environment (flowd reads its own, fixed when it starts, not flowctl's); export it before starting flowd, or put client_secret in the file (mode 0600)", p.ClientSecretEnv)
		}
	}
	hasSecret := p.ClientSecret != ""
	method, key, err := settingAuthMethod(pf, hasSecret)
	if err != nil {
		return Provider{}, fail(key, "%v", err)
	}
	switch {
	case method != "":
		p.AuthMethod, p.AuthMethodFrom = string(method), FromSetting
		if err := fitsCredentials(method, hasSecret); err != nil {
			return Provider{}, fail(key, "%v", err)
		}
	case p.Preset != "":
		m, err := engine.ChooseAuthMethod(Presets[p.Preset].AuthMethods, hasSecret)
		if err != nil {
			return Provider{}, fail("client_secret", "%v; set client_secret or client_secret_env (or token_endpoint_auth_method if you know the provider takes another)", err)
		}
		p.AuthMethod, p.AuthMethodFrom = string(m), FromPreset
	case pf.Issuer == "":
		// No metadata to choose from: every server takes Basic from a
		// client with a secret (RFC 6749 section 2.3.1), and a public
		// client identifies itself by client_id alone (section 3.2.1).
		p.AuthMethod, p.AuthMethodFrom = string(engine.AuthMethodClientSecretBasic), FromDefault
		if !hasSecret {
			p.AuthMethod = string(engine.AuthMethodNone)
		}
	}
	return p, nil
}

// settingAuthMethod reads the explicit method: token_endpoint_auth_method,
// or the older auth_style. It returns "" when neither is set, and the key
// to name in an error.
func settingAuthMethod(pf providerFile, hasSecret bool) (engine.AuthMethod, string, error) {
	var fromStyle engine.AuthMethod
	switch pf.AuthStyle {
	case "":
	case AuthStyleInHeader:
		fromStyle = engine.AuthMethodClientSecretBasic
	case AuthStyleInParams:
		fromStyle = engine.AuthMethodClientSecretPost
		if !hasSecret {
			fromStyle = engine.AuthMethodNone
		}
	default:
		return "", "auth_style", fmt.Errorf("%q is not in_params or in_header (or use token_endpoint_auth_method = \"none\", \"client_secret_basic\" or \"client_secret_post\")", pf.AuthStyle)
	}
	if pf.AuthMethod == "" {
		return fromStyle, "auth_style", nil
	}
	m := engine.AuthMethod(pf.AuthMethod)
	if !m.Valid() {
		return "", "token_endpoint_auth_method", fmt.Errorf("%q is not none, client_secret_basic or client_secret_post", pf.AuthMethod)
	}
	if fromStyle != "" && fromStyle != m {
		return "", "token_endpoint_auth_method", fmt.Errorf("%s contradicts auth_style = %q; remove auth_style", m, pf.AuthStyle)
	}
	return m, "token_endpoint_auth_method", nil
}

// fitsCredentials refuses a method the client's credentials cannot use: a
// secret-based one without a secret would send an empty one, which strict
// servers refuse (RFC 6749 section 5.2), and none would never send a
// secret that is set.
func fitsCredentials(m engine.AuthMethod, hasSecret bool) error {
	switch {
	case m == engine.AuthMethodNone && hasSecret:
		return fmt.Errorf("none sends no client secret, but one is set: remove client_secret/client_secret_env, or use client_secret_basic or client_secret_post")
	case m != engine.AuthMethodNone && !hasSecret:
		return fmt.Errorf("%s needs a client secret: set client_secret or client_secret_env, or use none for a public client", m)
	}
	return nil
}

// checkURL accepts https URLs, and http only for loopback hosts (local test
// servers such as Dex): an http provider elsewhere would send codes and
// secrets in the clear. A value that is not a URL is not quoted back: it
// may be a secret pasted into the wrong field.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("not an absolute http(s) URL (write it like \"https://example.com/oauth/token\"; the value is not shown, in case it is a misplaced secret)")
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("http://%s is not a loopback host: use https", u.Host)
	}
	return u, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
