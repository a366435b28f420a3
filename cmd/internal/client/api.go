package client

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

func path(name string, vals ...string) (wire.Route, string, error) {
	r, ok := wire.RouteByName(name)
	if !ok {
		return wire.Route{}, "", fmt.Errorf("flowd's API has no %q route; flowctl and flowd are from different builds", name)
	}
	return r, r.Path(vals...), nil
}

func (c *Client) route(ctx context.Context, name string, vals []string, query url.Values, body, out any, wait time.Duration) error {
	r, p, err := path(name, vals...)
	if err != nil {
		return err
	}
	return c.call(ctx, request{method: r.Method, path: p, query: query, body: body, wait: wait}, out)
}

// Start asks flowd to start a flow.
func (c *Client) Start(ctx context.Context, req wire.StartRequest) (wire.StartResponse, error) {
	var out wire.StartResponse
	err := c.route(ctx, wire.RouteStart, nil, nil, req, &out, 0)
	return out, err
}

// Status returns a flow as it stands. A positive wait long-polls: flowd
// answers as soon as the flow is terminal, or after wait (capped at
// wire.MaxWait) with the flow still live.
func (c *Client) Status(ctx context.Context, state string, wait time.Duration) (wire.Flow, error) {
	var q url.Values
	if wait > 0 {
		wait = min(wait, wire.MaxWait)
		q = url.Values{"wait": {wait.String()}}
	}
	var out wire.Flow
	err := c.route(ctx, wire.RouteStatus, []string{state}, q, nil, &out, wait)
	return out, err
}

// Cancel ends a live flow with error(canceled).
func (c *Client) Cancel(ctx context.Context, state string) (wire.Flow, error) {
	var out wire.Flow
	err := c.route(ctx, wire.RouteCancel, []string{state}, nil, nil, &out, 0)
	return out, err
}

// List returns the flows in the given statuses (all when empty) for the
// provider (all when empty), newest first.
func (c *Client) List(ctx context.Context, statuses []string, provider string) ([]wire.Flow, error) {
	q := url.Values{}
	if len(statuses) > 0 {
		q.Set("status", strings.Join(statuses, ","))
	}
	if provider != "" {
		q.Set("provider", provider)
	}
	var out wire.ListResponse
	err := c.route(ctx, wire.RouteList, nil, q, nil, &out, 0)
	return out.Flows, err
}

// History returns a flow's records in order.
func (c *Client) History(ctx context.Context, state string) (wire.HistoryResponse, error) {
	var out wire.HistoryResponse
	err := c.route(ctx, wire.RouteHistory, []string{state}, nil, nil, &out, 0)
	return out, err
}

// Callback hands flowd a callback the user pasted (manual transport).
func (c *Client) Callback(ctx context.Context, req wire.CallbackRequest) (wire.CallbackResponse, error) {
	var out wire.CallbackResponse
	// The exchange with the provider happens inside this request: give it
	// the time flowd gives a token exchange, not the default.
	err := c.route(ctx, wire.RouteCallback, nil, nil, req, &out, 30*time.Second)
	return out, err
}

// Providers lists the configured providers.
func (c *Client) Providers(ctx context.Context) ([]wire.Provider, error) {
	var out wire.ProvidersResponse
	err := c.route(ctx, wire.RouteProviders, nil, nil, nil, &out, 0)
	return out.Providers, err
}

// ProvidersInfo is Providers with the config file flowd reads them from.
func (c *Client) ProvidersInfo(ctx context.Context) (wire.ProvidersResponse, error) {
	var out wire.ProvidersResponse
	err := c.route(ctx, wire.RouteProviders, nil, nil, nil, &out, 0)
	return out, err
}

// Reload asks flowd to re-read its config file and apply it. An invalid
// file is an *APIError with code invalid_config naming the file, the field
// and the reason; flowd then keeps the config it had.
func (c *Client) Reload(ctx context.Context) (wire.ReloadResponse, error) {
	var out wire.ReloadResponse
	// OIDC discovery may take its timeout per issuer.
	err := c.route(ctx, wire.RouteReload, nil, nil, nil, &out, time.Minute)
	return out, err
}

// Token returns a valid access token for the account at provider,
// refreshed by flowd when needed. account "" lets flowd pick the
// provider's one account (and refuse, naming them, when it has several).
func (c *Client) Token(ctx context.Context, provider, account string) (wire.TokenResponse, error) {
	var out wire.TokenResponse
	// A refresh calls the provider: allow for it.
	err := c.route(ctx, wire.RouteToken, []string{provider}, accountQuery(account), nil, &out, 30*time.Second)
	return out, err
}

// ForceRefresh has flowd refresh the account's token at provider
// (account as for Token) although it has not expired (an API answered 401
// to it) and returns the new one.
func (c *Client) ForceRefresh(ctx context.Context, provider, account string) (wire.TokenResponse, error) {
	var out wire.TokenResponse
	q := accountQuery(account)
	if q == nil {
		q = url.Values{}
	}
	q.Set("force", "true")
	err := c.route(ctx, wire.RouteToken, []string{provider}, q, nil, &out, 30*time.Second)
	return out, err
}

// Disconnect revokes the account's stored token at provider (account as
// for Token) at the provider when it can and removes it; the response
// says what the provider was told.
func (c *Client) Disconnect(ctx context.Context, provider, account string) (wire.DisconnectResponse, error) {
	var out wire.DisconnectResponse
	err := c.route(ctx, wire.RouteDisconnect, []string{provider}, accountQuery(account), nil, &out, 0)
	return out, err
}

func accountQuery(account string) url.Values {
	if account == "" {
		return nil
	}
	return url.Values{"account": {account}}
}

// Connections lists the connections flowd holds, all or provider's.
func (c *Client) Connections(ctx context.Context, provider string) ([]wire.Connection, error) {
	var out wire.ConnectionsResponse
	var q url.Values
	if provider != "" {
		q = url.Values{"provider": {provider}}
	}
	err := c.route(ctx, wire.RouteConnections, nil, q, nil, &out, 0)
	return out.Connections, err
}

// Health returns basic facts about the daemon.
func (c *Client) Health(ctx context.Context) (wire.HealthResponse, error) {
	var out wire.HealthResponse
	err := c.route(ctx, wire.RouteHealth, nil, nil, nil, &out, 0)
	return out, err
}

// ExportQuery selects records for Export. Zero fields select everything.
type ExportQuery struct {
	Flow  string
	Since time.Time
}

// Export streams the event log in global order as JSON lines. The caller
// closes the reader.
func (c *Client) Export(ctx context.Context, q ExportQuery) (io.ReadCloser, error) {
	r, _ := wire.RouteByName(wire.RouteExport)
	v := url.Values{}
	if q.Flow != "" {
		v.Set("flow", q.Flow)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	// An export of a large log may take a while to stream; bound only the
	// wait for flowd's first byte, not the copy.
	resp, cancel, err := c.send(ctx, request{method: r.Method, path: r.Path(), query: v, noTimeout: true})
	if err != nil {
		return nil, err
	}
	return &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
