package engine

import (
	"context"
	"time"
)

// TokenKey names a stored token: the provider, and the account when known.
type TokenKey struct {
	Provider string
	Account  string
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
