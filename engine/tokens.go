package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// TokenKey names a stored token: the provider, and the account when known.
type TokenKey struct {
	Provider string
	// Account is the Principal of the flow that obtained the token; empty
	// for flows started without one (the local user).
	Account string
}

// StoredToken is a token as the engine keeps it: the provider's token and
// the scopes it was granted (oauth2.Token drops extras such as scope when
// marshalled, so they are kept here).
type StoredToken struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	Scopes       []string  `json:"scopes,omitempty"`
	// Flow is the state of the flow that obtained the token.
	Flow     string    `json:"flow,omitempty"`
	Obtained time.Time `json:"obtained"`
}

// TokenStore keeps the tokens of completed flows. The default keeps them
// sealed in the Log's secrets; an embedder may keep them elsewhere (a
// keychain, a vault).
type TokenStore interface {
	// SaveToken stores tok under key, replacing any earlier token.
	SaveToken(ctx context.Context, key TokenKey, tok StoredToken) error
	// LoadToken returns the token under key, or an error wrapping ErrNoToken.
	LoadToken(ctx context.Context, key TokenKey) (StoredToken, error)
	// DeleteToken removes the token under key; removing none is not an error.
	DeleteToken(ctx context.Context, key TokenKey) error
}

// tokenKeyPrefix prefixes the Log secrets that hold tokens.
const tokenKeyPrefix = "token/"

// logTokens is the default TokenStore: tokens sealed in the Log's secrets.
type logTokens struct{ log Log }

func (s *logTokens) key(k TokenKey) string { return tokenKeyPrefix + k.Provider + "/" + k.Account }

// encode is a token's sealed secret's plaintext.
func (s *logTokens) encode(k TokenKey, tok StoredToken) ([]byte, error) {
	b, err := json.Marshal(tok)
	if err != nil {
		return nil, fmt.Errorf("save token for %s: %w", k.Provider, err)
	}
	return b, nil
}

func (s *logTokens) SaveToken(ctx context.Context, k TokenKey, tok StoredToken) error {
	b, err := s.encode(k, tok)
	if err != nil {
		return err
	}
	if err := s.log.Append(ctx, nil, map[string][]byte{s.key(k): b}); err != nil {
		return fmt.Errorf("save token for %s: %w", k.Provider, err)
	}
	return nil
}

func (s *logTokens) LoadToken(ctx context.Context, k TokenKey) (StoredToken, error) {
	b, ok, err := s.log.Secret(ctx, s.key(k))
	if err != nil {
		return StoredToken{}, fmt.Errorf("load token for %s: %w", k.Provider, err)
	}
	if !ok {
		return StoredToken{}, fmt.Errorf("%s: %w; connect first: flowctl connect %s", k.Provider, ErrNoToken, k.Provider)
	}
	var tok StoredToken
	if err := json.Unmarshal(b, &tok); err != nil {
		return StoredToken{}, fmt.Errorf("load token for %s: stored token is unreadable (%v); reconnect: flowctl connect %s", k.Provider, err, k.Provider)
	}
	return tok, nil
}

func (s *logTokens) DeleteToken(ctx context.Context, k TokenKey) error {
	if err := s.log.Append(ctx, nil, map[string][]byte{s.key(k): nil}); err != nil {
		return fmt.Errorf("delete token for %s: %w", k.Provider, err)
	}
	return nil
}

// Token returns a valid access token for key, refreshing it through the
// provider's token endpoint when it has expired. A rotated refresh token is
// saved before Token returns. The second value is the stored token's
// metadata (scopes, expiry) after any refresh.
//
// key.Account is the StartRequest.Principal of the flow that obtained the
// token, so one principal's connect never replaces another's token;
// TokenKey{Provider: name} is the token of flows started without one.
func (e *Engine) Token(ctx context.Context, key TokenKey) (*oauth2.Token, StoredToken, error) {
	if err := e.enter(); err != nil {
		return nil, StoredToken{}, err
	}
	defer e.inflight.Done()
	provider := key.Provider
	p, err := e.provider(provider)
	if err != nil {
		return nil, StoredToken{}, err
	}
	// One refresh of a token at a time: with rotating refresh tokens, two
	// concurrent refreshes would spend the same refresh token and one would
	// fail. Other tokens go on meanwhile.
	mu, _ := e.refreshing.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	st, err := e.tokens.LoadToken(ctx, key)
	if err != nil {
		return nil, StoredToken{}, err
	}
	tok := &oauth2.Token{AccessToken: st.AccessToken, TokenType: st.TokenType, RefreshToken: st.RefreshToken, Expiry: st.Expiry}
	if !st.Expiry.IsZero() && !e.clock.Now().Add(tokenExpiryDelta).Before(st.Expiry) {
		if st.RefreshToken == "" {
			return nil, st, fmt.Errorf("token for %s expired and the provider gave no refresh token; reconnect: flowctl connect %s", provider, provider)
		}
		rctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, e.http), e.cfg.ExchangeTimeout)
		defer cancel()
		expired := *tok
		expired.Expiry = time.Unix(1, 0) // force the refresh whatever oauth2's own clock says
		fresh, err := p.oauth.TokenSource(rctx, &expired).Token()
		if err != nil {
			d := describeExchangeError(err, rctx.Err(), e.cfg.ExchangeTimeout, st.RefreshToken, p.ClientSecret)
			return nil, st, fmt.Errorf("refresh token for %s: %s (%s); reconnect: flowctl connect %s", provider, d.Message, d.ErrorCode, provider)
		}
		st.AccessToken, st.Expiry = fresh.AccessToken, e.expiry(fresh)
		if fresh.TokenType != "" {
			st.TokenType = fresh.TokenType
		}
		if fresh.RefreshToken != "" {
			st.RefreshToken = fresh.RefreshToken
		}
		if s := grantedScopes(fresh, nil); len(s) > 0 {
			st.Scopes = s
		}
		if err := e.tokens.SaveToken(ctx, key, st); err != nil {
			return nil, st, fmt.Errorf("refresh token for %s: save the refreshed token: %w", provider, err)
		}
		tok = &oauth2.Token{AccessToken: st.AccessToken, TokenType: st.TokenType, RefreshToken: st.RefreshToken, Expiry: st.Expiry}
		e.logger.Info("token refreshed", "provider", provider)
	}
	return tok, st, nil
}

// expiry is tok's expiry on the engine's clock. oauth2 computes Expiry
// from expires_in with the system clock; an injected clock (tests, a
// replay) would then compare its time with another clock's.
func (e *Engine) expiry(tok *oauth2.Token) time.Time {
	switch {
	case tok.ExpiresIn > 0:
		return e.clock.Now().UTC().Add(time.Duration(tok.ExpiresIn) * time.Second)
	case tok.Expiry.IsZero():
		return time.Time{}
	default:
		return e.clock.Now().UTC().Add(time.Until(tok.Expiry)).Round(time.Second)
	}
}

// tokenExpiryDelta refreshes a token this long before it expires, so it
// does not expire in the caller's hands.
const tokenExpiryDelta = 10 * time.Second

// Disconnect deletes key's stored token (TokenKey{Provider: name} for
// flows started without a Principal). It returns an error wrapping
// ErrNoToken when there is none.
func (e *Engine) Disconnect(ctx context.Context, key TokenKey) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.inflight.Done()
	if _, err := e.provider(key.Provider); err != nil {
		return err
	}
	if _, err := e.tokens.LoadToken(ctx, key); err != nil {
		return err
	}
	return e.tokens.DeleteToken(ctx, key)
}
