package config

import (
	"slices"
	"strings"
)

// Preset is a provider's well-known endpoints and sensible defaults, so a
// user supplies only a client id and secret.
type Preset struct {
	AuthURL  string
	TokenURL string
	// AuthMethods are the token endpoint auth methods the provider takes,
	// as its token_endpoint_auth_methods_supported would list them; the
	// method is chosen from them as from discovered metadata.
	AuthMethods []string
	Scopes      []string
	AuthParams  map[string]string
	// DeviceAuthURL is the device authorization endpoint (RFC 8628), for
	// the device transport; empty where the preset's usual client type
	// cannot use it.
	DeviceAuthURL string
	// UserInfoURL is where the signed-in user is read with the access
	// token, for providers that issue no ID token (GitHub).
	UserInfoURL string
	// IDTokenIssuer and JWKSURL verify the ID tokens of an OpenID Connect
	// preset without discovering it at start-up.
	IDTokenIssuer string
	JWKSURL       string
	// RevocationURL is the provider's RFC 7009 endpoint; empty where it has
	// none (GitHub, Microsoft and Slack revoke only through their own APIs).
	RevocationURL string
}

// Presets by name. Each lists the auth methods flowd has always used with
// the provider: the form body, with the secret when there is one and
// client_id alone (none) when there is not, whether or not the provider
// takes public clients (Microsoft and GitLab do, for PKCE apps). The
// method is fixed before any request: oauth2's auto-detection would retry
// a failed exchange and send the code twice.
var Presets = map[string]Preset{
	"github": {
		AuthURL:     "https://github.com/login/oauth/authorize",
		TokenURL:    "https://github.com/login/oauth/access_token",
		AuthMethods: post,
		Scopes:      []string{"read:user"},
		// Needs "Enable Device Flow" in the OAuth app's settings.
		DeviceAuthURL: "https://github.com/login/device/code",
		// GitHub issues no ID token; its REST API names the user (login).
		UserInfoURL: "https://api.github.com/user",
	},
	"google": {
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		// Google's discovery document names it as revocation_endpoint.
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		AuthMethods:   post,
		Scopes:        []string{"openid", "email", "profile"},
		// Without these Google issues no refresh token after the first consent.
		AuthParams:    map[string]string{"access_type": "offline", "prompt": "consent"},
		IDTokenIssuer: "https://accounts.google.com",
		JWKSURL:       "https://www.googleapis.com/oauth2/v3/certs",
		// No DeviceAuthURL: Google serves the device grant
		// (https://oauth2.googleapis.com/device/code) only to clients of
		// type "TVs and Limited Input devices", not to the web or desktop
		// client this preset is for. docs/config.md says how to add one.
	},
	"microsoft": {
		// "common" is replaced by the provider's tenant when one is set.
		AuthURL:     "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
		TokenURL:    "https://login.microsoftonline.com/common/oauth2/v2.0/token",
		AuthMethods: post,
		// Needs "Allow public client flows" in the app registration.
		DeviceAuthURL: "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
		Scopes:        []string{"openid", "profile", "email", "offline_access"},
	},
	"gitlab": {
		// read_user reads the user, named by its username.
		UserInfoURL: "https://gitlab.com/api/v4/user",
		AuthURL:     "https://gitlab.com/oauth/authorize",
		TokenURL:    "https://gitlab.com/oauth/token",
		// Doorkeeper's RFC 7009 endpoint (GitLab's discovery names it too).
		RevocationURL: "https://gitlab.com/oauth/revoke",
		AuthMethods:   post,
		Scopes:        []string{"read_user"},
	},
	"slack": {
		AuthURL:     "https://slack.com/oauth/v2/authorize",
		TokenURL:    "https://slack.com/api/oauth.v2.access",
		AuthMethods: post,
		Scopes:      []string{"users:read"},
	},
}

// post is what every preset's provider takes: client_secret_post from a
// confidential client, none from a public one.
var post = []string{"client_secret_post", "none"}

// PresetNames returns the preset names, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	slices.SortFunc(names, strings.Compare)
	return names
}
