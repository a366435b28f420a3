// Package identity establishes who signed in at the end of a connect: it
// is flowd's engine.Config.Identify (and any embedder's who wants it). For OpenID Connect providers it
// verifies the ID token with github.com/coreos/go-oidc (signature through
// the issuer's JWKS, iss, aud, exp) and checks its nonce against the one
// the flow sent; for others (GitHub) it reads the user from the provider's
// userinfo URL with the new access token. The engine stays free of both:
// it only sends the nonce and calls the hook.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
)

// maxUserInfoBytes bounds a userinfo answer; real ones are a few KiB.
const maxUserInfoBytes = 1 << 20

// Errors the Identify func returns, wrapped with what failed.
var (
	// ErrNoIDToken: the flow asked for openid, but the token response
	// carried no id_token.
	ErrNoIDToken = errors.New("the provider returned no ID token although the flow asked for openid")
	// ErrNonceMismatch: the ID token's nonce is not the one the flow sent:
	// it was issued for another sign-in (a replayed or injected token).
	ErrNonceMismatch = errors.New("the ID token's nonce is not the one this flow sent")
	// ErrNoUser: the userinfo answer named no user.
	ErrNoUser = errors.New("the userinfo endpoint named no user")
)

// Provider is how one provider's users are identified.
type Provider struct {
	// Name is the engine provider's name.
	Name string
	// ClientID is the audience an ID token must be issued to.
	ClientID string
	// IDTokenIssuer and JWKSURL verify ID tokens: iss must be the issuer,
	// and the signature a key the JWKS publishes. Without JWKSURL the
	// issuer's discovery document names it, fetched on first use.
	IDTokenIssuer string
	JWKSURL       string
	// UserInfoURL is read with the access token when no ID token decides
	// (GitHub: https://api.github.com/user).
	UserInfoURL string
}

// Options tune New.
type Options struct {
	// HTTPClient fetches JWKS and userinfo. Default http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock ID token expiry is checked against. Default time.Now.
	Now func() time.Time
}

// New returns the engine's Identify for providers. A provider with neither
// an ID token issuer nor a userinfo URL identifies no one (the token is
// stored under the account the connect named).
func New(providers []Provider, o Options) engine.IdentifyFunc {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ids := &identifier{opts: o, byName: map[string]Provider{}, verifiers: map[string]*oidc.IDTokenVerifier{}}
	for _, p := range providers {
		ids.byName[p.Name] = p
	}
	return ids.identify
}

type identifier struct {
	opts   Options
	byName map[string]Provider

	mu sync.Mutex
	// verifiers are made on first use: each holds its issuer's key set,
	// fetched (and cached) only when an ID token needs it.
	verifiers map[string]*oidc.IDTokenVerifier
}

func (i *identifier) identify(ctx context.Context, p engine.Provider, tok *oauth2.Token, nonce string) (engine.Identity, error) {
	cp, ok := i.byName[p.Name]
	if !ok {
		return engine.Identity{}, nil
	}
	raw, _ := tok.Extra("id_token").(string)
	oidcFlow := nonce != "" || raw != ""
	switch {
	case oidcFlow && cp.IDTokenIssuer != "":
		if raw == "" {
			return engine.Identity{}, ErrNoIDToken
		}
		return i.verifyIDToken(ctx, cp, raw, nonce)
	case cp.UserInfoURL != "":
		return i.userInfo(ctx, cp, tok)
	}
	return engine.Identity{}, nil
}

func (i *identifier) verifier(ctx context.Context, cp Provider) (*oidc.IDTokenVerifier, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if v := i.verifiers[cp.Name]; v != nil {
		return v, nil
	}
	// The key set keeps this context for every fetch of the JWKS: a
	// long-lived one carrying flowd's HTTP client.
	keysCtx := oidc.ClientContext(context.Background(), i.opts.HTTPClient)
	cfg := &oidc.Config{ClientID: cp.ClientID, Now: i.opts.Now}
	var v *oidc.IDTokenVerifier
	if cp.JWKSURL != "" {
		v = oidc.NewVerifier(cp.IDTokenIssuer, oidc.NewRemoteKeySet(keysCtx, cp.JWKSURL), cfg)
	} else {
		// Discovery names jwks_uri (and checks the issuer is exactly the
		// one asked for). Not cached on failure: the next sign-in asks again.
		op, err := oidc.NewProvider(oidc.ClientContext(ctx, i.opts.HTTPClient), cp.IDTokenIssuer)
		if err != nil {
			return nil, fmt.Errorf("find the issuer's keys: %w", err)
		}
		v = op.VerifierContext(keysCtx, cfg)
	}
	i.verifiers[cp.Name] = v
	return v, nil
}

// verifyIDToken checks the ID token as OpenID Connect Core 1.0 section
// 3.1.3.7 asks: signature by a key of the issuer's JWKS, iss, aud (this
// client), exp, and the nonce the authorization request carried.
func (i *identifier) verifyIDToken(ctx context.Context, cp Provider, raw, nonce string) (engine.Identity, error) {
	v, err := i.verifier(ctx, cp)
	if err != nil {
		return engine.Identity{}, fmt.Errorf("verify the ID token: %w", err)
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return engine.Identity{}, fmt.Errorf("verify the ID token: %w", err)
	}
	if nonce == "" || idt.Nonce != nonce {
		return engine.Identity{}, fmt.Errorf("verify the ID token: %w", ErrNonceMismatch)
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified *bool  `json:"email_verified"`
	}
	if err := idt.Claims(&claims); err != nil {
		return engine.Identity{}, fmt.Errorf("read the ID token's claims: %w", err)
	}
	id := engine.Identity{Subject: idt.Subject, Account: idt.Subject}
	// An address the provider says it has not verified may be anyone's:
	// it is neither recorded nor used to name the account.
	if claims.Email != "" && (claims.EmailVerified == nil || *claims.EmailVerified) {
		id.Email, id.Account = claims.Email, claims.Email
	}
	return id, nil
}

// userInfo reads the signed-in user from the provider's API with the new
// access token. The account is its login (GitHub), username (GitLab),
// preferred_username, email or id, in that order.
func (i *identifier) userInfo(ctx context.Context, cp Provider, tok *oauth2.Token) (engine.Identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.UserInfoURL, nil)
	if err != nil {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: %w", cp.UserInfoURL, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	// GitHub refuses API requests without a User-Agent.
	req.Header.Set("User-Agent", "flowd")
	resp, err := i.opts.HTTPClient.Do(req)
	if err != nil {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: %w", cp.UserInfoURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserInfoBytes))
	if err != nil {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: read the answer: %w", cp.UserInfoURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: HTTP %d", cp.UserInfoURL, resp.StatusCode)
	}
	var u map[string]any
	if err := json.Unmarshal(body, &u); err != nil {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: the answer is not a JSON object (%v)", cp.UserInfoURL, err)
	}
	id := engine.Identity{Subject: first(text(u["sub"]), text(u["id"])), Email: text(u["email"])}
	id.Account = first(text(u["login"]), text(u["username"]), text(u["preferred_username"]), id.Email, id.Subject)
	if id.Account == "" {
		return engine.Identity{}, fmt.Errorf("ask %s who signed in: %w", cp.UserInfoURL, ErrNoUser)
	}
	return id, nil
}

// text is a JSON string or integer (GitHub's ids are numbers) as text.
func text(v any) string {
	switch v := v.(type) {
	case string:
		return strings.TrimSpace(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
