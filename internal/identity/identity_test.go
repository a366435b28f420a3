package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/identity"
)

const clientID = "flowd-client"

// issuer is a fake OpenID Connect issuer on loopback: it publishes one RSA
// key as its JWKS and signs ID tokens with it (or with a key it does not
// publish, for forgeries).
type issuer struct {
	t      *testing.T
	url    string
	key    *rsa.PrivateKey
	forger *rsa.PrivateKey
	// jwksFetches counts JWKS requests.
	jwksFetches atomic.Int32
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{t: t}
	var err error
	is.key, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	is.forger, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.url, "jwks_uri": is.url + "/keys",
				"authorization_endpoint": is.url + "/auth", "token_endpoint": is.url + "/token"})
			return
		}
		if r.URL.Path != "/keys" {
			http.NotFound(w, r)
			return
		}
		is.jwksFetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	}))
	t.Cleanup(srv.Close)
	is.url = srv.URL
	return is
}

func (is *issuer) provider() identity.Provider {
	return identity.Provider{Name: "oidc", ClientID: clientID, IDTokenIssuer: is.url, JWKSURL: is.url + "/keys"}
}

// sign returns an ID token with claims, signed with key.
func (is *issuer) sign(key *rsa.PrivateKey, claims map[string]any) string {
	is.t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	require.NoError(is.t, err)
	payload, err := json.Marshal(claims)
	require.NoError(is.t, err)
	jws, err := signer.Sign(payload)
	require.NoError(is.t, err)
	raw, err := jws.CompactSerialize()
	require.NoError(is.t, err)
	return raw
}

// claims are a valid ID token's claims for nonce, issued now.
func (is *issuer) claims(nonce string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": is.url, "aud": clientID, "sub": "CiQwOGE4Njg0Yi1kYjg4", "nonce": nonce,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"email": "alice@example.com", "email_verified": true,
	}
}

func withIDToken(raw string) *oauth2.Token {
	return (&oauth2.Token{AccessToken: "ACCESS-T0KEN"}).WithExtra(map[string]any{"id_token": raw})
}

func TestVerifiesIDToken(t *testing.T) {
	is := newIssuer(t)
	identify := identity.New([]identity.Provider{is.provider()}, identity.Options{})
	p := engine.Provider{Name: "oidc"}
	const nonce = "n0nce-of-this-flow"

	id, err := identify(context.Background(), p, withIDToken(is.sign(is.key, is.claims(nonce))), nonce)
	require.NoError(t, err)
	assert.Equal(t, engine.Identity{Account: "alice@example.com", Subject: "CiQwOGE4Njg0Yi1kYjg4", Email: "alice@example.com"}, id)

	unverified := is.claims(nonce)
	unverified["email_verified"] = false
	id, err = identify(context.Background(), p, withIDToken(is.sign(is.key, unverified)), nonce)
	require.NoError(t, err)
	assert.Equal(t, engine.Identity{Account: "CiQwOGE4Njg0Yi1kYjg4", Subject: "CiQwOGE4Njg0Yi1kYjg4"}, id, "an unverified email names nothing")
	assert.Equal(t, int32(1), is.jwksFetches.Load(), "the key set is fetched once and cached")
}

// Every check OpenID Connect Core 1.0 section 3.1.3.7 asks for refuses a
// token that fails it.
func TestRefusesBadIDTokens(t *testing.T) {
	is := newIssuer(t)
	identify := identity.New([]identity.Provider{is.provider()}, identity.Options{})
	p := engine.Provider{Name: "oidc"}
	const nonce = "n0nce-of-this-flow"
	with := func(k string, v any) map[string]any {
		c := is.claims(nonce)
		c[k] = v
		return c
	}
	for _, tc := range []struct {
		name  string
		raw   string
		nonce string
		want  string
	}{
		{"another issuer", is.sign(is.key, with("iss", "https://evil.example")), nonce, "different provider"},
		{"another audience", is.sign(is.key, with("aud", "someone-else")), nonce, "audience"},
		{"expired", is.sign(is.key, with("exp", time.Now().Add(-time.Hour).Unix())), nonce, "expired"},
		{"signed by a key the issuer does not publish", is.sign(is.forger, is.claims(nonce)), nonce, "signature"},
		{"another flow's nonce", is.sign(is.key, with("nonce", "n0nce-of-another-flow")), nonce, "nonce"},
		{"no nonce in the token", is.sign(is.key, with("nonce", "")), nonce, "nonce"},
		{"not a JWT", "garbage", nonce, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identify(context.Background(), p, withIDToken(tc.raw), tc.nonce)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := identify(context.Background(), p, &oauth2.Token{AccessToken: "a"}, nonce)
	assert.True(t, errors.Is(err, identity.ErrNoIDToken), "an openid flow without an ID token: %v", err)
}

// GitHub issues no ID token: the user comes from its API, read with the
// new access token; the login names the account.
func TestUserInfo(t *testing.T) {
	var auth atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer gho_G00D" {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"login":"octocat","id":583231,"email":null,"name":"The Octocat"}`))
	}))
	defer api.Close()
	identify := identity.New([]identity.Provider{{Name: "github", UserInfoURL: api.URL + "/user"}}, identity.Options{})
	p := engine.Provider{Name: "github"}

	id, err := identify(context.Background(), p, &oauth2.Token{AccessToken: "gho_G00D"}, "")
	require.NoError(t, err)
	assert.Equal(t, engine.Identity{Account: "octocat", Subject: "583231"}, id)
	assert.Equal(t, "Bearer gho_G00D", auth.Load())

	_, err = identify(context.Background(), p, &oauth2.Token{AccessToken: "gho_BAD"}, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")

	none, err := identify(context.Background(), engine.Provider{Name: "unconfigured"}, &oauth2.Token{AccessToken: "x"}, "")
	require.NoError(t, err)
	assert.Equal(t, engine.Identity{}, none, "a provider with no way to identify users names no one")
}

// An issuer whose JWKS URL flowd was not told (discovery had not answered
// when flowd started) is discovered on first use.
func TestDiscoversKeysWhenNotGiven(t *testing.T) {
	is := newIssuer(t)
	p := is.provider()
	p.JWKSURL = ""
	identify := identity.New([]identity.Provider{p}, identity.Options{})
	id, err := identify(context.Background(), engine.Provider{Name: "oidc"}, withIDToken(is.sign(is.key, is.claims("n1"))), "n1")
	require.NoError(t, err)
	assert.Equal(t, "alice@example.com", id.Account)
	_, err = identify(context.Background(), engine.Provider{Name: "oidc"}, withIDToken(is.sign(is.forger, is.claims("n1"))), "n1")
	assert.Error(t, err, "still checked against the discovered keys")
}
