package config

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestMissingDefaultFileRunsWithNoProviders(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "none.toml"), true, nil)
	require.NoError(t, err)
	assert.Empty(t, c.Providers)
	assert.Equal(t, DefaultListen, c.Listen)
	assert.Equal(t, DefaultTTL, c.TTL)

	_, err = Load(filepath.Join(t.TempDir(), "none.toml"), false, nil)
	require.Error(t, err, "an explicitly named file that is missing is an error")
	assert.Contains(t, err.Error(), "none.toml")
}

func TestPresetNeedsOnlyClientIDAndSecret(t *testing.T) {
	c, err := Parse("f.toml", []byte(`
[providers.github]
client_id = "abc"
client_secret_env = "GH_SECRET"
`), env(map[string]string{"GH_SECRET": "s3cret"}))
	require.NoError(t, err)
	require.Len(t, c.Providers, 1)
	p := c.Providers[0]
	assert.Equal(t, "github", p.Preset)
	assert.Equal(t, "https://github.com/login/oauth/authorize", p.AuthURL)
	assert.Equal(t, "s3cret", p.ClientSecret)
	e := p.Engine()
	assert.Equal(t, engine.AuthMethodClientSecretPost, e.AuthMethod)
	assert.Equal(t, FromPreset, p.AuthMethodFrom)
	assert.NotContains(t, fmt.Sprintf("%v %+v", p, p), "s3cret", "printing a provider must not show its secret")
}

func TestEveryPresetLoads(t *testing.T) {
	for _, name := range PresetNames() {
		c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.mine]\npreset = %q\nclient_id = \"x\"\n", name)), nil)
		require.NoError(t, err, name)
		p := c.Providers[0]
		assert.NotEmpty(t, p.AuthURL, name)
		assert.NotEmpty(t, p.TokenURL, name)
		assert.Equal(t, "none", p.AuthMethod, "%s: a preset without a secret sends client_id alone, as it always did", name)
	}
	for _, want := range []string{"github", "google", "microsoft", "gitlab", "slack"} {
		assert.Contains(t, Presets, want)
	}
}

func TestMicrosoftTenant(t *testing.T) {
	c, err := Parse("f.toml", []byte("[providers.ms]\npreset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"x\"\n"), nil)
	require.NoError(t, err)
	assert.Equal(t, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", c.Providers[0].TokenURL)
	assert.Equal(t, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode", c.Providers[0].DeviceAuthURL)
}

// GitHub and Microsoft offer the device grant to the clients their presets
// are for; Google only to another client type, so its preset has none.
// device_auth_url sets or overrides one, and is checked like every URL.
func TestDeviceEndpoints(t *testing.T) {
	c, err := Parse("f.toml", []byte("[providers.github]\nclient_id = \"x\"\n[providers.google]\nclient_id = \"y\"\n"+
		"[providers.tv]\npreset = \"google\"\nclient_id = \"z\"\ndevice_auth_url = \"https://oauth2.googleapis.com/device/code\"\n"), nil)
	require.NoError(t, err)
	got := map[string]string{}
	for _, p := range c.Providers {
		got[p.Name] = p.Engine().DeviceAuthURL
	}
	assert.Equal(t, map[string]string{"github": "https://github.com/login/device/code", "google": "", "tv": "https://oauth2.googleapis.com/device/code"}, got)

	_, err = Parse("f.toml", []byte("[providers.github]\nclient_id = \"x\"\ndevice_auth_url = \"ftp://nope\"\n"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "providers.github.device_auth_url")

	// A config file as flowd loads it knows the setting.
	path := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(path, []byte("[providers.tv]\npreset = \"google\"\nclient_id = \"z\"\ndevice_auth_url = \"https://oauth2.googleapis.com/device/code\"\n"), 0o600))
	c, err = Load(path, false, nil)
	require.NoError(t, err)
	assert.Equal(t, "https://oauth2.googleapis.com/device/code", c.Providers[0].DeviceAuthURL)
}

func TestSettings(t *testing.T) {
	c, err := Parse("f.toml", []byte(`
listen = "127.0.0.1:9999"
public_base_url = "https://auth.example.com/"
ttl = "10m"
retention = "-1h"
[providers.dex]
auth_url = "http://127.0.0.1:5556/dex/auth"
token_url = "http://127.0.0.1:5556/dex/token"
client_id = "flowd"
client_secret = "x"
scopes = ["openid", "offline_access"]
auth_params = { prompt = "login" }
`), nil)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9999", c.Listen)
	assert.Equal(t, "https://auth.example.com", c.PublicBaseURL)
	assert.Equal(t, 10*time.Minute, c.TTL)
	assert.Negative(t, c.Retention)
	p := c.Providers[0]
	assert.Equal(t, "client_secret_basic", p.AuthMethod, "a custom provider with a secret defaults to HTTP Basic")
	assert.Equal(t, FromDefault, p.AuthMethodFrom)
	assert.Equal(t, []string{"openid", "offline_access"}, p.Scopes)
	assert.Equal(t, map[string]string{"prompt": "login"}, p.AuthParams)
}

// Every invalid config names the file, the field and the reason.
func TestInvalidConfigNamesFileFieldAndReason(t *testing.T) {
	cases := []struct {
		name, toml, field, reason string
	}{
		{"unknown key", "[providers.github]\nclient_id = \"x\"\nclient_secert = \"y\"\n", "providers.github.client_secert", "unknown setting"},
		{"unknown top key", "listne = \"x\"\n", "listne", "unknown setting"},
		{"syntax", "listen = \n", "", "flowd.toml:1: listen: expected value"},
		{"no client id", "[providers.github]\n", "providers.github.client_id", "required"},
		{"unknown preset", "[providers.x]\npreset = \"gitbub\"\nclient_id = \"x\"\n", "providers.x.preset", "github"},
		{"no endpoints", "[providers.corp]\nclient_id = \"x\"\n", "providers.corp", "no endpoints"},
		{"half endpoints", "[providers.corp]\nauth_url = \"https://a/\"\nclient_id = \"x\"\n", "providers.corp.token_url", "required"},
		{"http elsewhere", "[providers.corp]\nauth_url = \"http://a.example/\"\ntoken_url = \"https://a.example/t\"\nclient_id = \"x\"\n", "providers.corp.auth_url", "https"},
		{"bad style", "[providers.github]\nclient_id = \"x\"\nauth_style = \"basic\"\n", "providers.github.auth_style", "in_params"},
		{"env unset", "[providers.github]\nclient_id = \"x\"\nclient_secret_env = \"NOPE_UNSET\"\n", "providers.github.client_secret_env", "NOPE_UNSET"},
		{"both secrets", "[providers.github]\nclient_id = \"x\"\nclient_secret = \"a\"\nclient_secret_env = \"B\"\n", "providers.github.client_secret_env", "not both"},
		{"issuer and urls", "[providers.c]\nissuer = \"https://i.example\"\nauth_url = \"https://a.example\"\nclient_id = \"x\"\n", "providers.c.issuer", "not both"},
		{"bad ttl", "ttl = \"5 minutes\"\n", "ttl", "duration"},
		{"ttl range", "ttl = \"48h\"\n", "ttl", "out of range"},
		{"listen", "listen = \"8085\"\n", "listen", "host:port"},
		{"listen public", "listen = \"0.0.0.0:8085\"\n", "listen", "loopback"},
		{"bad name", "[providers.GitHub]\nclient_id = \"x\"\n", "providers.GitHub", "lower-case"},
		{"reserved param", "[providers.github]\nclient_id = \"x\"\nauth_params = { state = \"x\" }\n", "providers.github.auth_params.state", "flowd sets"},
		{"scope with space", "[providers.github]\nclient_id = \"x\"\nscopes = [\"a b\"]\n", "providers.github.scopes", "spaces"},
		{"public url query", "public_base_url = \"https://x.example/?a=b\"\n", "public_base_url", "query"},
		{"unknown store", "store = \"postgres\"\n", "store", `use "bbolt"`},
		{"etcd endpoint not a URL", "store = \"etcd\"\n[etcd]\nendpoints = [\"10.0.0.1:2379\"]\n", "etcd.endpoints", "item 1 is not an http:// or https:// URL"},
		{"etcd endpoints a string", "[etcd]\nendpoints = \"https://a:2379\"\n", "etcd.endpoints", "expected a list"},
		{"unknown etcd key", "[etcd]\nprefx = \"a/\"\n", "etcd.prefx", "did you mean prefix?"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/flowd.toml", []byte(tc.toml), env(nil))
			require.Error(t, err)
			var ce *Error
			require.True(t, errors.As(err, &ce), "%T", err)
			assert.Equal(t, "/etc/flowd.toml", ce.File)
			if tc.field != "" {
				assert.Equal(t, tc.field, ce.Field)
			}
			assert.Contains(t, err.Error(), "/etc/flowd.toml")
			assert.Contains(t, err.Error(), tc.reason)
		})
	}
}

// The store settings have config keys: store, and the [etcd] table.
func TestStoreSettings(t *testing.T) {
	c, err := Parse("f.toml", []byte("store = \"etcd\"\n[etcd]\nendpoints = [\"https://a:2379\", \"http://b:2379\"]\nprefix = \"p/\"\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"\nseal_key_file = \"/s\"\n"), env(nil))
	require.NoError(t, err)
	assert.Equal(t, StoreEtcd, c.Store)
	assert.Equal(t, Etcd{Endpoints: []string{"https://a:2379", "http://b:2379"}, Prefix: "p/", Cert: "/c", Key: "/k", CA: "/ca", SealKeyFile: "/s"}, c.Etcd)
	c, err = Parse("f.toml", nil, env(nil))
	require.NoError(t, err)
	assert.Empty(t, c.Store, "no store in the file: the flags, environment or default decide")
}

func TestOIDCDiscovery(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/dex/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"token_endpoint_auth_methods_supported":["client_secret_post"],"device_authorization_endpoint":%q}`,
			srv.URL+"/dex", srv.URL+"/dex/auth", srv.URL+"/dex/token", srv.URL+"/dex/device/code")
	}))
	defer srv.Close()
	c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.dex]\nissuer = %q\nclient_id = \"x\"\nclient_secret = \"s\"\n", srv.URL+"/dex")), nil)
	require.NoError(t, err)
	require.NoError(t, c.Resolve(context.Background(), srv.Client(), time.Second))
	p := c.Providers[0]
	assert.Equal(t, srv.URL+"/dex/auth", p.AuthURL)
	assert.Equal(t, srv.URL+"/dex/token", p.TokenURL)
	assert.Equal(t, "client_secret_post", p.AuthMethod, "the only secret method the metadata lists")
	assert.Equal(t, FromDiscovery, p.AuthMethodFrom)
	assert.Equal(t, srv.URL+"/dex/device/code", p.DeviceAuthURL, "the device endpoint comes from discovery")
	assert.Equal(t, srv.URL+"/dex/device/code", p.Engine().DeviceAuthURL)

	c, err = Parse("f.toml", []byte(fmt.Sprintf("[providers.dex]\nissuer = %q\nclient_id = \"x\"\n", srv.URL+"/other")), nil)
	require.NoError(t, err)
	err = c.Resolve(context.Background(), srv.Client(), time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "providers.dex.issuer")
	assert.Contains(t, err.Error(), "404")
}

func TestOIDCDiscoveryTimesOut(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.slow]\nissuer = %q\nclient_id = \"x\"\n", srv.URL)), nil)
	require.NoError(t, err)
	err = c.Resolve(context.Background(), srv.Client(), 50*time.Millisecond)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no answer within")
}

func TestExampleConfigLoads(t *testing.T) {
	path := filepath.Join("..", "..", "..", "docs", "flowd.example.toml")
	if _, err := os.Stat(path); err != nil {
		t.Skip("docs/flowd.example.toml not written yet")
	}
	c, err := Load(path, false, env(map[string]string{"GITHUB_CLIENT_SECRET": "x", "GOOGLE_CLIENT_SECRET": "y", "DEX_CLIENT_SECRET": "z"}))
	require.NoError(t, err)
	assert.NotEmpty(t, c.Providers)
}

// The revocation endpoint disconnect calls comes from discovery's
// revocation_endpoint, a preset, or revocation_url, which wins; a provider
// without one has none.
func TestRevocationURL(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"revocation_endpoint":%q,"token_endpoint_auth_methods_supported":["none"]}`,
			srv.URL+"/dex", srv.URL+"/dex/auth", srv.URL+"/dex/token", srv.URL+"/dex/revoke")
	}))
	defer srv.Close()
	c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.dex]\nissuer = %q\nclient_id = \"x\"\n", srv.URL+"/dex")), nil)
	require.NoError(t, err)
	require.NoError(t, c.Resolve(context.Background(), srv.Client(), time.Second))
	assert.Equal(t, srv.URL+"/dex/revoke", c.Providers[0].Engine().RevocationURL)

	c, err = Parse("f.toml", []byte("[providers.google]\nclient_id = \"x\"\n[providers.github]\nclient_id = \"y\"\n"+
		"[providers.gitlab]\nclient_id = \"z\"\nrevocation_url = \"https://git.example.com/oauth/revoke\"\n"), nil)
	require.NoError(t, err)
	byName := map[string]string{}
	for _, p := range c.Providers {
		byName[p.Name] = p.Engine().RevocationURL
	}
	assert.Equal(t, "https://oauth2.googleapis.com/revoke", byName["google"])
	assert.Empty(t, byName["github"], "GitHub has no RFC 7009 endpoint")
	assert.Equal(t, "https://git.example.com/oauth/revoke", byName["gitlab"])

	_, err = Parse("f.toml", []byte("[providers.github]\nclient_id = \"y\"\nrevocation_url = \"http://example.com/revoke\"\n"), nil)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "providers.github.revocation_url", ce.Field)
}

// token_endpoint_auth_method wins over the choice; auth_style still
// works; a method the credentials cannot use is refused naming the key.
func TestTokenEndpointAuthMethodSetting(t *testing.T) {
	parse := func(body string) (Provider, error) {
		c, err := Parse("f.toml", []byte(body), nil)
		if err != nil {
			return Provider{}, err
		}
		return c.Providers[0], nil
	}
	custom := "[providers.corp]\nauth_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\nclient_id = \"x\"\n"
	for _, tc := range []struct {
		name, toml, method, from string
	}{
		{"preset, setting wins", "[providers.github]\nclient_id = \"x\"\nclient_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_basic\"\n", "client_secret_basic", FromSetting},
		{"preset, chosen", "[providers.github]\nclient_id = \"x\"\nclient_secret = \"s\"\n", "client_secret_post", FromPreset},
		{"public custom client", custom, "none", FromDefault},
		{"confidential custom client", custom + "client_secret = \"s\"\n", "client_secret_basic", FromDefault},
		{"explicit none", custom + "token_endpoint_auth_method = \"none\"\n", "none", FromSetting},
		{"explicit post", custom + "client_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n", "client_secret_post", FromSetting},
		{"auth_style in_header", custom + "client_secret = \"s\"\nauth_style = \"in_header\"\n", "client_secret_basic", FromSetting},
		{"auth_style in_params", custom + "client_secret = \"s\"\nauth_style = \"in_params\"\n", "client_secret_post", FromSetting},
		{"auth_style in_params, public", custom + "auth_style = \"in_params\"\n", "none", FromSetting},
		{"both agree", custom + "client_secret = \"s\"\nauth_style = \"in_params\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n", "client_secret_post", FromSetting},
	} {
		p, err := parse(tc.toml)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.method, p.AuthMethod, tc.name)
		assert.Equal(t, tc.from, p.AuthMethodFrom, tc.name)
		assert.Equal(t, engine.AuthMethod(tc.method), p.Engine().AuthMethod, tc.name)
	}
	for _, tc := range []struct{ name, toml, field, reason string }{
		{"unknown", custom + "token_endpoint_auth_method = \"private_key_jwt\"\n", "providers.corp.token_endpoint_auth_method", "not none"},
		{"basic, no secret", custom + "token_endpoint_auth_method = \"client_secret_basic\"\n", "providers.corp.token_endpoint_auth_method", "needs a client secret"},
		{"in_header, no secret", custom + "auth_style = \"in_header\"\n", "providers.corp.auth_style", "needs a client secret"},
		{"none, secret", custom + "client_secret = \"s\"\ntoken_endpoint_auth_method = \"none\"\n", "providers.corp.token_endpoint_auth_method", "sends no client secret"},
		{"contradiction", custom + "client_secret = \"s\"\nauth_style = \"in_header\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n", "providers.corp.token_endpoint_auth_method", "contradicts"},
	} {
		_, err := parse(tc.toml)
		var ce *Error
		require.True(t, errors.As(err, &ce), "%s: %v", tc.name, err)
		assert.Equal(t, tc.field, ce.Field, tc.name)
		assert.Contains(t, err.Error(), tc.reason, tc.name)
	}
}

// Discovery reads the issuer (exactly the configured one, RFC 8414 3.3),
// whether iss is sent (RFC 9207), and chooses the auth method from the
// advertised list; the engine provider then checks iss.
func TestDiscoveryIssuerAndAuthMethod(t *testing.T) {
	var srv *httptest.Server
	methods := `["client_secret_basic","client_secret_post"]`
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"token_endpoint_auth_methods_supported":%s,"authorization_response_iss_parameter_supported":true}`,
			srv.URL, srv.URL+"/auth", srv.URL+"/token", methods)
	}))
	defer srv.Close()
	resolve := func(extra string) (Provider, error) {
		c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.idp]\nissuer = %q\nclient_id = \"x\"\n%s", srv.URL, extra)), nil)
		require.NoError(t, err)
		if err := c.Resolve(context.Background(), srv.Client(), time.Second); err != nil {
			return Provider{}, err
		}
		return c.Providers[0], nil
	}
	p, err := resolve("client_secret = \"s\"\n")
	require.NoError(t, err)
	assert.Equal(t, "client_secret_basic", p.AuthMethod, "basic is preferred when listed")
	assert.Equal(t, FromDiscovery, p.AuthMethodFrom)
	assert.True(t, p.RequireIssuer)
	e := p.Engine()
	assert.Equal(t, srv.URL, e.Issuer)
	assert.True(t, e.RequireIssuer)

	_, err = resolve("")
	require.Error(t, err, "a public client where none is not advertised")
	assert.Contains(t, err.Error(), "providers.idp.issuer")
	assert.Contains(t, err.Error(), "token_endpoint_auth_method")
	p, err = resolve("token_endpoint_auth_method = \"none\"\n")
	require.NoError(t, err, "the setting wins over the metadata")
	assert.Equal(t, "none", p.AuthMethod)
	assert.Equal(t, FromSetting, p.AuthMethodFrom)

	methods = `["none","client_secret_basic"]`
	p, err = resolve("")
	require.NoError(t, err)
	assert.Equal(t, "none", p.AuthMethod)

	c, err := Parse("f.toml", []byte(fmt.Sprintf("[providers.idp]\nissuer = %q\nclient_id = \"x\"\n", srv.URL+"/")), nil)
	require.NoError(t, err)
	err = c.Resolve(context.Background(), srv.Client(), time.Second)
	require.Error(t, err, "the issuer must be identical, trailing slash included")
	assert.Contains(t, err.Error(), "exactly")
}
