package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/oauth2"
)

// AuthMethod is how the client authenticates at the token endpoint, named
// as RFC 8414's token_endpoint_auth_methods_supported names it.
type AuthMethod string

// The token endpoint auth methods the engine speaks (RFC 6749 section
// 2.3.1, RFC 7591 section 2).
const (
	// AuthMethodNone: a public client. client_id goes in the form and
	// nothing else authenticates it; PKCE binds the code to this client.
	AuthMethodNone AuthMethod = "none"
	// AuthMethodClientSecretBasic: client_id and secret in an HTTP Basic
	// Authorization header, the one method every server must support.
	AuthMethodClientSecretBasic AuthMethod = "client_secret_basic"
	// AuthMethodClientSecretPost: client_id and client_secret in the form.
	AuthMethodClientSecretPost AuthMethod = "client_secret_post"
)

// ErrNoAuthMethod: the server supports no token endpoint auth method the
// client can use with the credentials it has. ChooseAuthMethod returns it
// wrapped, naming what the server supports.
var ErrNoAuthMethod = errors.New("no usable token endpoint auth method")

// ChooseAuthMethod picks the token endpoint auth method from what the
// server advertises (token_endpoint_auth_methods_supported; nil or empty
// means the field is absent, and RFC 8414 section 2 makes
// client_secret_basic the default then) and whether the client has a
// secret. A client without a secret uses none, which the server must
// list; one with a secret prefers client_secret_basic, else
// client_secret_post. The choice is made once, before any request: trying
// one method and then another would present a single-use code twice.
func ChooseAuthMethod(supported []string, hasSecret bool) (AuthMethod, error) {
	if len(supported) == 0 {
		supported = []string{string(AuthMethodClientSecretBasic)}
	}
	if !hasSecret {
		if slices.Contains(supported, string(AuthMethodNone)) {
			return AuthMethodNone, nil
		}
		return "", fmt.Errorf("%w: the client has no secret, so it needs %q, and the server supports only %s", ErrNoAuthMethod, AuthMethodNone, strings.Join(supported, ", "))
	}
	for _, m := range []AuthMethod{AuthMethodClientSecretBasic, AuthMethodClientSecretPost} {
		if slices.Contains(supported, string(m)) {
			return m, nil
		}
	}
	return "", fmt.Errorf("%w: the client has a secret, and the server supports neither %s nor %s, only %s", ErrNoAuthMethod, AuthMethodClientSecretBasic, AuthMethodClientSecretPost, strings.Join(supported, ", "))
}

// Valid reports whether m is one of the methods the engine speaks.
func (m AuthMethod) Valid() bool {
	return m == AuthMethodNone || m == AuthMethodClientSecretBasic || m == AuthMethodClientSecretPost
}

// authMethodOf is the method a provider uses: its own, or, when unset,
// none for a client without a secret and client_secret_basic (which RFC
// 6749 section 2.3.1 has every server support) for one with a secret.
func authMethodOf(p Provider) AuthMethod {
	switch {
	case p.AuthMethod != "":
		return p.AuthMethod
	case p.ClientSecret == "":
		return AuthMethodNone
	}
	return AuthMethodClientSecretBasic
}

// checkAuthMethod refuses a method that does not fit the credentials: a
// secret-based method with no secret would send an empty password (strict
// servers refuse it, RFC 6749 section 5.2 invalid_client), and none with a
// secret would silently never send it.
func checkAuthMethod(p Provider) error {
	m := authMethodOf(p)
	switch {
	case !m.Valid():
		return fmt.Errorf("provider %q: AuthMethod %q is not %s, %s or %s", p.Name, m, AuthMethodNone, AuthMethodClientSecretBasic, AuthMethodClientSecretPost)
	case m == AuthMethodNone && p.ClientSecret != "":
		return fmt.Errorf("provider %q: AuthMethod %s sends no client secret, but one is set: drop the secret or use %s or %s", p.Name, m, AuthMethodClientSecretBasic, AuthMethodClientSecretPost)
	case m != AuthMethodNone && p.ClientSecret == "":
		return fmt.Errorf("provider %q: AuthMethod %s needs a client secret, and none is set: set one, or use %s for a public client", p.Name, m, AuthMethodNone)
	}
	return nil
}

// oauthConfig is p as x/oauth2 takes it. The style is never AutoDetect,
// which retries a refused request the other way and so sends a code twice.
// For none the secret is left empty: with AuthStyleInParams x/oauth2 then
// sends client_id alone, and no client_secret field at all
// (TestPublicClientSendsNoSecret holds it to that).
func oauthConfig(p Provider) oauth2.Config {
	c := oauth2.Config{
		ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: p.Scopes,
		Endpoint: oauth2.Endpoint{AuthURL: p.AuthURL, TokenURL: p.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	switch authMethodOf(p) {
	case AuthMethodNone:
		c.ClientSecret = ""
	case AuthMethodClientSecretBasic:
		c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	}
	return c
}
