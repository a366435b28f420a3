package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flowdhq/flowd/states"
)

// Connection is what a user holds after connecting: a stored token and how
// it stands. It is folded from the log's records (the connect's
// exchange_succeeded and the token events after it), so a replay of the
// log gives the same connections; it holds no secret.
type Connection struct {
	Provider string
	// Account is the account the token is stored under ("" for the
	// local user): TokenKey.Account.
	Account string
	// Flow is the flow that connected; its history holds the token events.
	Flow string
	// ClientID is the client the token is refreshed and revoked with when
	// it is not the provider's configured one, and Registration how it
	// came: RegisteredPerStart (StartRequest.Client) or an MCP server's
	// registration (RegisteredPre, ...). Both "" for the configured client.
	ClientID, Registration string
	// Connected is when that flow stored the token.
	Connected time.Time
	// Scopes are the scopes granted.
	Scopes []string
	// Expiry is when the access token expires; zero when it does not.
	Expiry time.Time
	// HasRefreshToken: the provider gave a refresh token, so an expired
	// access token can be renewed without the user.
	HasRefreshToken bool
	// Health is healthy, refresh_failing or needs_reconnect at the time
	// Connections was called.
	Health states.Health
	// LastRefresh is when a refresh last succeeded (zero: never).
	LastRefresh time.Time
	// Refreshes and Rotations count successful refreshes and rotated
	// refresh tokens.
	Refreshes, Rotations int
	// LastFailure is the latest failed refresh since the last success, and
	// FailingSince the first one of that run; nil and zero when healthy.
	LastFailure  *states.RefreshFailure
	FailingSince time.Time
	// Refreshing: a refresh is under way (or was lost with its engine).
	Refreshing bool
	// Disconnected is set only in the Hooks.Connection call of a
	// disconnect: when the token was deleted, and Revocation what the
	// provider was told.
	Disconnected time.Time
	Revocation   states.Revocation
}

// connectionOf turns a folded connection into the API's form, its health
// at now.
func connectionOf(c states.Connection, now time.Time) Connection {
	return Connection{
		Provider: c.Provider, Account: c.Account, Flow: c.Flow, Connected: c.Connected,
		ClientID: c.ClientID, Registration: c.Registration,
		Scopes: slices.Clone(c.Scopes), Expiry: c.TokenExpiry, HasRefreshToken: c.HasRefreshToken(),
		Health: c.HealthAt(now), LastRefresh: c.LastRefresh, Refreshes: c.Refreshes, Rotations: c.Rotations,
		LastFailure: c.LastFailure, FailingSince: c.FailingSince, Refreshing: c.Refreshing,
		Disconnected: c.Disconnected, Revocation: c.Revocation,
	}
}

// Connections lists every connection the log holds, sorted by provider and
// account: for each, the latest connect that was not disconnected. It
// reads the history of each connection's flow, found in the engine's
// index of connections (connindex.go), which the first call after Open
// (or the first prune) builds by folding the whole log once; its cost
// grows with the connections, not the log. Retention keeps the flow of a connection that
// still holds its token (on a Log that is an engine.KeepingPruner, as
// every Log of this module is).
func (e *Engine) Connections(ctx context.Context) ([]Connection, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	index, err := e.conns.snapshot(ctx, "", e.scanConnections)
	if err != nil {
		return nil, err
	}
	now := e.clock.Now()
	var out []Connection
	for _, flow := range index {
		h, err := e.log.History(ctx, flow)
		if err != nil {
			return nil, fmt.Errorf("connections: history of %s: %w", states.ShortID(flow), err)
		}
		f, err := states.Fold(h)
		if err != nil || f.Conn == nil || !f.Conn.Active() {
			continue // pruned, or unreadable: as the scan would skip it
		}
		out = append(out, connectionOf(*f.Conn, now))
	}
	slices.SortFunc(out, func(a, b Connection) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Account, b.Account))
	})
	return out, nil
}

// connectionFlows is the set of flows whose connection still holds its
// token: the flows retention must keep.
func (e *Engine) connectionFlows(ctx context.Context) (map[string]bool, error) {
	// Retention folds the whole log anyway: the index is rebuilt from it.
	active, err := e.conns.rebuild(ctx, e.scanConnections)
	if err != nil {
		return nil, err
	}
	keep := make(map[string]bool, len(active))
	for _, c := range active {
		keep[c.Flow] = true
	}
	return keep, nil
}

// scanConnections folds the whole log into its connections.
func (e *Engine) scanConnections(ctx context.Context) ([]states.Connection, error) {
	flows := map[string]states.Flow{}
	err := e.log.Scan(ctx, 0, func(rec states.Record) error {
		f, ok := flows[rec.Flow]
		if !ok && rec.FlowSeq != 1 {
			return nil // a history whose start was pruned mid-scan
		}
		if g, err := f.Apply(rec); err == nil {
			flows[rec.Flow] = g
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("connections: scan the log: %w", err)
	}
	return states.Connections(flows), nil
}

// connectionChanged calls Hooks.Connection with f's connection. The
// caller holds no lock: neither a flow's nor a token's refresh lock.
func (e *Engine) connectionChanged(f states.Flow) {
	if e.hooks.Connection == nil || f.Conn == nil {
		return
	}
	e.hooks.Connection(connectionOf(*f.Conn, e.clock.Now()))
}

// Disconnection is what Disconnect did at the provider.
type Disconnection struct {
	// Revocation is revoked (the provider's RFC 7009 endpoint accepted),
	// unsupported (the provider has no revocation endpoint: its tokens
	// stay valid there until they expire) or failed (ErrorCode, HTTPStatus
	// and Message say how). The local copy is deleted in every case.
	Revocation states.Revocation
	ErrorCode  string
	HTTPStatus int
	Message    string
}

// Disconnect revokes key's stored token at the provider's revocation
// endpoint when it has one (RFC 7009), and deletes it. A key without an
// account means the token stored under no account name, or the
// provider's only connected account, as for Token. It returns an error
// wrapping ErrNoToken when there is none. The revocation and the deletion
// are recorded on the flow that connected (revoked, then disconnected, in
// the append that deletes the token), and Hooks.Connection is called.
func (e *Engine) Disconnect(ctx context.Context, key TokenKey) (Disconnection, error) {
	if err := e.enter(); err != nil {
		return Disconnection{}, err
	}
	defer e.inflight.Done()
	p, err := e.resolve(ctx, key.Provider)
	if err != nil {
		return Disconnection{}, err
	}
	key.Provider = p.Name // an MCP server's canonical URL; a provider's own name otherwise
	if key, err = e.resolveAccount(ctx, key); err != nil {
		return Disconnection{}, err
	}
	// No refresh of this token may run meanwhile: it would store a token
	// just deleted.
	mu, _ := e.refreshing.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	res, changed, err := e.disconnectLocked(ctx, p, key)
	mu.(*sync.Mutex).Unlock()
	if changed != nil {
		e.connectionChanged(*changed)
	}
	return res, err
}

// disconnectLocked is Disconnect with key's refresh lock held.
func (e *Engine) disconnectLocked(ctx context.Context, p *provider, key TokenKey) (Disconnection, *states.Flow, error) {
	st, err := e.tokens.LoadToken(ctx, key)
	if err != nil {
		return Disconnection{}, nil, err
	}
	bg := context.WithoutCancel(ctx) // once revoked, the deletion is recorded
	var res Disconnection
	if cp, err := e.connectionClient(bg, p, key, st); err != nil {
		// Revoking as the configured client would present another
		// client's tokens: the local copy still goes.
		res = Disconnection{Revocation: states.RevocationFailed, ErrorCode: "client_missing",
			Message: "the per-start client the token was obtained with is missing from the sealed store, so it could not be revoked; revoke it at the provider"}
	} else {
		res = e.revoke(bg, cp, st)
	}
	for attempt := 0; ; attempt++ {
		f, ok, err := e.connectionFlow(bg, st.Flow)
		if err != nil {
			return res, nil, fmt.Errorf("disconnect %s: %w", key.Provider, err)
		}
		var secrets map[string][]byte
		lt, inLog := e.tokens.(*logTokens)
		if inLog && ok {
			secrets = map[string][]byte{lt.key(key): nil}
		} else if err := e.tokens.DeleteToken(bg, key); err != nil {
			return res, nil, fmt.Errorf("disconnect %s: %w", key.Provider, err)
		}
		if st.ClientID != "" {
			// The connection's per-start client goes with its token.
			if secrets == nil {
				secrets = map[string][]byte{}
			}
			secrets[connClientKey(key)] = nil
		}
		if !ok || f.ID != st.Flow || st.Flow == "" {
			if secrets != nil {
				if err := e.log.Append(bg, nil, secrets); err != nil {
					return res, nil, fmt.Errorf("disconnect %s: delete its client: %w", key.Provider, err)
				}
			}
			return res, nil, nil // no flow to record on (pruned): the token is gone
		}
		cl := &claim{flow: f, index: -1}
		var recs []states.Record
		if res.Revocation == states.RevocationDone {
			recs = e.record(cl, states.Revoked, states.Data{})
		}
		d := states.Data{ErrorCode: res.ErrorCode, HTTPStatus: res.HTTPStatus, Message: res.Message, TokenEvents: &states.TokenEvents{Revocation: res.Revocation}}
		next := e.record(cl, states.Disconnected, d)
		next[0].FlowSeq += uint64(len(recs))
		recs = append(recs, next...)
		g, err := e.commit(bg, cl, recs, secrets)
		if conflict(err) && attempt < outcomeRetries {
			continue
		}
		if err != nil {
			return res, nil, fmt.Errorf("disconnect %s: %w", key.Provider, err)
		}
		e.logger.Info("disconnected", "provider", key.Provider, "revocation", res.Revocation)
		return res, &g, nil
	}
}

// revoke asks the provider's revocation endpoint to revoke st's refresh
// token (which, RFC 7009 section 2.1, should end the access tokens of its
// grant too) and its access token, authenticating as at the token endpoint.
func (e *Engine) revoke(ctx context.Context, p *provider, st StoredToken) Disconnection {
	if p.RevocationURL == "" {
		return Disconnection{Revocation: states.RevocationUnsupported, Message: "the provider has no revocation endpoint: its tokens stay valid there until they expire"}
	}
	type hinted struct{ token, hint string }
	var tokens []hinted
	if st.RefreshToken != "" {
		tokens = append(tokens, hinted{st.RefreshToken, "refresh_token"})
	}
	tokens = append(tokens, hinted{st.AccessToken, "access_token"})
	for _, t := range tokens {
		if d, ok := e.revoke1(ctx, p, t.token, t.hint, st); !ok {
			return d
		}
	}
	return Disconnection{Revocation: states.RevocationDone}
}

func (e *Engine) revoke1(ctx context.Context, p *provider, token, hint string, st StoredToken) (Disconnection, bool) {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.ExchangeTimeout)
	defer cancel()
	// RFC 7009 section 2.1: the client authenticates as at the token
	// endpoint, with the same method.
	method := authMethodOf(p.Provider)
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	switch method {
	case AuthMethodNone:
		form.Set("client_id", p.ClientID)
	case AuthMethodClientSecretPost:
		form.Set("client_id", p.ClientID)
		form.Set("client_secret", p.ClientSecret)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Disconnection{Revocation: states.RevocationFailed, ErrorCode: "invalid_request", Message: "the revocation URL is not usable"}, false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if method == AuthMethodClientSecretBasic {
		// RFC 6749 section 2.3.1: form-encode the credentials first.
		req.SetBasicAuth(url.QueryEscape(p.ClientID), url.QueryEscape(p.ClientSecret))
	}
	sent := []string{st.AccessToken, st.RefreshToken, p.ClientSecret}
	resp, err := e.http.Do(req)
	if err != nil {
		d := describeExchangeError(err, rctx.Err(), e.cfg.ExchangeTimeout, sent...)
		return Disconnection{Revocation: states.RevocationFailed, ErrorCode: d.ErrorCode, Message: d.Message}, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		// Section 2.2: 200 also for a token the server did not know.
		return Disconnection{}, true
	}
	var oe struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &oe)
	d := Disconnection{Revocation: states.RevocationFailed, HTTPStatus: resp.StatusCode,
		ErrorCode: clip(redact(oe.Error, sent), 200), Message: clip(redact(oe.ErrorDescription, sent), 500)}
	if d.ErrorCode == "" {
		d.ErrorCode = "http_error"
	}
	if d.Message == "" {
		d.Message = "the revocation endpoint answered " + resp.Status
	}
	return d, false
}
