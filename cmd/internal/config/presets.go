package config

import (
	"slices"
	"strings"
)

// Preset is a provider's well-known endpoints and sensible defaults, so a
// user supplies only a client id and secret.
type Preset struct {
	AuthURL    string
	TokenURL   string
	AuthStyle  string
	Scopes     []string
	AuthParams map[string]string
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

// Presets by name. Auth styles are set explicitly: oauth2's auto-detection
// retries a failed exchange and would send the code twice.
var Presets = map[string]Preset{
	"github": {
		AuthURL:   "https://github.com/login/oauth/authorize",
		TokenURL:  "https://github.com/login/oauth/access_token",
		AuthStyle: AuthStyleInParams,
		Scopes:    []string{"read:user"},
		// GitHub issues no ID token; its REST API names the user (login).
		UserInfoURL: "https://api.github.com/user",
	},
	"google": {
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		// Google's discovery document names it as revocation_endpoint.
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		AuthStyle:     AuthStyleInParams,
		Scopes:        []string{"openid", "email", "profile"},
		// Without these Google issues no refresh token after the first consent.
		AuthParams:    map[string]string{"access_type": "offline", "prompt": "consent"},
		IDTokenIssuer: "https://accounts.google.com",
		JWKSURL:       "https://www.googleapis.com/oauth2/v3/certs",
	},
	"microsoft": {
		// "common" is replaced by the provider's tenant when one is set.
		AuthURL:   "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
		TokenURL:  "https://login.microsoftonline.com/common/oauth2/v2.0/token",
		AuthStyle: AuthStyleInParams,
		Scopes:    []string{"openid", "profile", "email", "offline_access"},
	},
	"gitlab": {
		// read_user reads the user, named by its username.
		UserInfoURL: "https://gitlab.com/api/v4/user",
		AuthURL:     "https://gitlab.com/oauth/authorize",
		TokenURL:    "https://gitlab.com/oauth/token",
		// Doorkeeper's RFC 7009 endpoint (GitLab's discovery names it too).
		RevocationURL: "https://gitlab.com/oauth/revoke",
		AuthStyle:     AuthStyleInParams,
		Scopes:        []string{"read_user"},
	},
	"slack": {
		AuthURL:   "https://slack.com/oauth/v2/authorize",
		TokenURL:  "https://slack.com/api/oauth.v2.access",
		AuthStyle: AuthStyleInParams,
		Scopes:    []string{"users:read"},
	},
}

// PresetNames returns the preset names, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	slices.SortFunc(names, strings.Compare)
	return names
}
