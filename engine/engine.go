package engine

import (
	"context"
	"errors"

	"golang.org/x/oauth2"

	"flowd.local/flowd/states"
)

var errTODO = errors.New("not implemented yet")

// Engine runs connect flows. It is safe for concurrent use.
type Engine struct{}

// Open recovers the engine from cfg.Log and starts its timers.
func Open(ctx context.Context, cfg Config) (*Engine, error) { return nil, errTODO }

// Close stops timers and waits for in-flight transitions. It does not close the Log.
func (e *Engine) Close() error { return errTODO }

// Start begins a flow.
func (e *Engine) Start(ctx context.Context, req StartRequest) (Started, error) {
	return Started{}, errTODO
}

// Callback delivers the provider's redirect.
func (e *Engine) Callback(ctx context.Context, p CallbackParams) (states.Flow, error) {
	return states.Flow{}, errTODO
}

// Cancel ends a live flow with error(canceled).
func (e *Engine) Cancel(ctx context.Context, state string) (states.Flow, error) {
	return states.Flow{}, errTODO
}

// Status returns a flow as it stands.
func (e *Engine) Status(ctx context.Context, state string) (states.Flow, error) {
	return states.Flow{}, errTODO
}

// Wait returns as soon as the flow is terminal, or when ctx is done.
func (e *Engine) Wait(ctx context.Context, state string) (states.Flow, error) {
	return states.Flow{}, errTODO
}

// History returns a flow's records.
func (e *Engine) History(ctx context.Context, state string) ([]states.Record, error) {
	return nil, errTODO
}

// List returns the flows matching f.
func (e *Engine) List(ctx context.Context, f Filter) ([]states.Flow, error) { return nil, errTODO }

// Token returns a valid access token for provider, refreshing it if needed.
func (e *Engine) Token(ctx context.Context, provider string) (*oauth2.Token, StoredToken, error) {
	return nil, StoredToken{}, errTODO
}

// Disconnect deletes the provider's stored token.
func (e *Engine) Disconnect(ctx context.Context, provider string) error { return errTODO }

// Providers lists the configured providers' names, sorted.
func (e *Engine) Providers() []string { return nil }
