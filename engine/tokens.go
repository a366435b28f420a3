package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// TokenKey names a stored token: the provider, and the account at it.
type TokenKey struct {
	Provider string
	// Account is the account the token belongs to: the one Config.Identify
	// established, else the StartRequest.Account of the flow that obtained
	// it; empty when neither named one.
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
	// Flow is the state of the flow that obtained the token. The token
	// events (refreshes, disconnect) are recorded on it.
	Flow string `json:"flow,omitempty"`
	// ClientID is the ID of the per-start client (StartRequest.Client)
	// the token was obtained with; its refreshes and revocation use that
	// client, whose secret the engine keeps sealed in the Log apart from
	// the token (never here). Empty for the provider's configured client.
	// A TokenStore must keep it: without it a refresh would go out as the
	// configured client, which the provider refuses.
	ClientID string    `json:"client_id,omitempty"`
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

// Errors of the token calls, besides ErrNoToken. Each is returned wrapped;
// test with errors.Is.
var (
	// ErrNoRefreshToken: the access token expired (or a refresh was forced)
	// and the provider gave no refresh token: only a new connect helps.
	ErrNoRefreshToken = errors.New("token expired and no refresh token is held")
	// ErrTokenUnreadable: the stored token could not be decoded.
	ErrTokenUnreadable = errors.New("stored token is unreadable")
)

// RefreshError is returned when the provider's token endpoint did not
// renew a token. Err is what the endpoint call returned: an
// *oauth2.RetrieveError when the provider answered (errors.As finds it),
// a network or timeout error otherwise; it is nil when another engine
// sharing the log ran the failed refresh and this one read its record.
// The message carries no token and no advice: what to tell a user is the
// caller's (flowd's API adds "reconnect with flowctl connect").
type RefreshError struct {
	Provider, Account string
	// ErrorCode is the provider's OAuth error ("invalid_grant"), or one of
	// flowd's: "timeout", "network_error", "http_error", "invalid_response".
	ErrorCode string
	// Message is the provider's error_description or a short detail, with
	// any secret that was sent redacted.
	Message string
	// HTTPStatus is the token endpoint's status; 0 when it did not answer.
	HTTPStatus int
	// Transient: trying again later may work (no answer, a timeout, HTTP
	// 5xx or 429). Otherwise the provider rejected the refresh.
	Transient bool
	Err       error
}

func (e *RefreshError) Error() string {
	msg := "refresh token for " + e.Provider
	if e.Account != "" {
		msg += " (" + e.Account + ")"
	}
	kind := "rejected by the provider"
	if e.Transient {
		kind = "failed"
	}
	msg += ": " + kind + ": " + e.ErrorCode
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap returns the endpoint call's error.
func (e *RefreshError) Unwrap() error { return e.Err }

// Rejected reports whether the provider refused the refresh (an OAuth
// error answer), as opposed to a failure that may pass.
func (e *RefreshError) Rejected() bool { return !e.Transient }

// NeedsReconnect reports whether the refresh token is dead (invalid_grant:
// revoked, expired or already used): only a new connect gets a token.
func (e *RefreshError) NeedsReconnect() bool { return !e.Transient && e.ErrorCode == "invalid_grant" }

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
		return StoredToken{}, fmt.Errorf("load token for %s: %w", k.Provider, ErrNoToken)
	}
	var tok StoredToken
	if err := json.Unmarshal(b, &tok); err != nil {
		return StoredToken{}, fmt.Errorf("load token for %s: %w (%v)", k.Provider, ErrTokenUnreadable, err)
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
// Every refresh is recorded on the flow that connected: refresh_started
// before the endpoint is called, then token_refreshed (with the token, in
// one append) or refresh_failed. Concurrent calls for one token, in this
// engine or in any engine sharing the log, make one refresh: the others
// wait for it and return its token (or its error).
//
// Errors: ErrNoToken (never connected, or disconnected), ErrNoRefreshToken,
// a *RefreshError from the provider, or the log's own.
//
// key.Account names the account: each account's token is stored under
// its own key, so one account's connect never replaces another's token.
// A key without an account (TokenKey{Provider: name}) means the token
// stored under no account name, or the provider's only connected account;
// with several it returns an *AccountRequiredError naming them.
func (e *Engine) Token(ctx context.Context, key TokenKey) (*oauth2.Token, StoredToken, error) {
	return e.token(ctx, key, "")
}

// ForceRefresh refreshes key's token even though it has not expired: for
// an API that answered 401 to it (revoked at the provider, or the clock
// skewed). Concurrent calls make one refresh: a call that finds the token
// already replaced since it began returns the new one without refreshing
// again.
func (e *Engine) ForceRefresh(ctx context.Context, key TokenKey) (*oauth2.Token, StoredToken, error) {
	// The token the caller was refused is the one stored now; once a
	// refresh replaced it, the callers queued behind take the new one.
	st, err := e.tokens.LoadToken(ctx, key)
	if err != nil {
		return nil, StoredToken{}, err
	}
	return e.token(ctx, key, st.AccessToken)
}

// TokenSource returns an oauth2.TokenSource for key's token, for clients
// built with oauth2.NewClient: each Token call goes through Engine.Token, so
// it refreshes through the engine (recorded, single-flight, rotated
// refresh tokens saved). Each call is bounded by the engine's exchange
// timeout, as the interface carries no context.
func (e *Engine) TokenSource(key TokenKey) oauth2.TokenSource { return &engineTokens{e: e, key: key} }

type engineTokens struct {
	e   *Engine
	key TokenKey
}

func (s *engineTokens) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.e.cfg.ExchangeTimeout)
	defer cancel()
	tok, _, err := s.e.Token(ctx, s.key)
	return tok, err
}

func oauthToken(st StoredToken) *oauth2.Token {
	return &oauth2.Token{AccessToken: st.AccessToken, TokenType: st.TokenType, RefreshToken: st.RefreshToken, Expiry: st.Expiry}
}

// token is Token; forced is the access token a ForceRefresh was refused,
// "" for an ordinary call.
func (e *Engine) token(ctx context.Context, key TokenKey, forced string) (*oauth2.Token, StoredToken, error) {
	if err := e.enter(); err != nil {
		return nil, StoredToken{}, err
	}
	defer e.inflight.Done()
	p, err := e.resolve(ctx, key.Provider)
	if err != nil {
		return nil, StoredToken{}, err
	}
	if IsResourceURL(key.Provider) {
		key.Provider = p.Name // an MCP server's tokens are kept under its canonical URL
	}
	if key, err = e.resolveAccount(ctx, key); err != nil {
		return nil, StoredToken{}, err
	}
	// One refresh of a token at a time in this engine: the callers queued
	// here find the token refreshed when their turn comes. Other tokens go
	// on meanwhile.
	mu, _ := e.refreshing.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	tok, st, changed, err := e.tokenLocked(ctx, p, key, forced)
	mu.(*sync.Mutex).Unlock()
	if changed != nil {
		e.connectionChanged(*changed)
	}
	return tok, st, err
}

// tokenLocked is token with key's refresh lock held. changed is the
// connection's flow when a refresh recorded something.
func (e *Engine) tokenLocked(ctx context.Context, p *provider, key TokenKey, forced string) (_ *oauth2.Token, _ StoredToken, changed *states.Flow, _ error) {
	for attempt := 0; ; attempt++ {
		st, err := e.tokens.LoadToken(ctx, key)
		if err != nil {
			return nil, StoredToken{}, nil, err
		}
		if !e.refreshDue(st, forced) {
			return oauthToken(st), st, nil, nil
		}
		if st.RefreshToken == "" {
			return nil, st, nil, fmt.Errorf("token for %s: %w", key.Provider, ErrNoRefreshToken)
		}
		// Before the claim: a connection whose client is gone records
		// no refresh it cannot make.
		used := st.ClientID
		cp, err := e.connectionClient(ctx, p, key, st)
		if err != nil {
			return nil, st, nil, err
		}
		cl, st, err := e.claimRefresh(ctx, key, st, forced)
		switch {
		case (errors.Is(err, errRefreshedElsewhere) || conflict(err)) && attempt < claimAttempts:
			// Another engine refreshed (or is done refreshing): the token
			// it stored is read again.
			continue
		case err != nil:
			return nil, st, nil, err
		}
		if st.ClientID != used {
			// The claim read a token a connect with another client stored
			// meanwhile: refresh it with its own client. (Should that one
			// be gone, the claim is left to be taken over.)
			if cp, err = e.connectionClient(ctx, p, key, st); err != nil {
				return nil, st, nil, err
			}
		}
		return e.refresh1(ctx, cp, key, st, cl)
	}
}

// claimAttempts bounds how often one call looks again after another
// engine's refresh; each look follows a whole refresh by that engine.
const claimAttempts = 8

// refreshDue reports whether st must be refreshed: it expires within
// tokenExpiryDelta, or it is the token a forced refresh was refused.
func (e *Engine) refreshDue(st StoredToken, forced string) bool {
	if forced != "" {
		return st.AccessToken == forced
	}
	return !st.Expiry.IsZero() && !e.clock.Now().Add(tokenExpiryDelta).Before(st.Expiry)
}

// errRefreshedElsewhere: another engine's refresh of the token ended while
// this one waited for it; the stored token is to be read again.
var errRefreshedElsewhere = errors.New("refreshed by another engine")

// claim is a refresh this engine recorded refresh_started for: the flow
// (a stand-in liveFlow, never live) to record the outcome on. Nil when the
// token's flow is not in the log (pruned, or a token saved by hand): the
// refresh then runs unrecorded.
type claim = liveFlow

// claimRefresh records refresh_started on the connection's flow and
// returns the claim with the token to refresh. The flow is read before the
// token: a refresh another engine records after that read makes the claim's
// compare-and-set fail, and one recorded before it left its token in the
// store. If another engine's refresh is under way, it waits for its outcome
// and returns errRefreshedElsewhere (or the failure, a *RefreshError).
func (e *Engine) claimRefresh(ctx context.Context, key TokenKey, st StoredToken, forced string) (*claim, StoredToken, error) {
	if st.Flow == "" {
		return nil, st, nil
	}
	f, ok, err := e.connectionFlow(ctx, st.Flow)
	if err != nil || !ok {
		return nil, st, err
	}
	// A claim with no outcome holds only on a log other engines share
	// (a Watcher): on a log this engine alone writes, this engine holds
	// the token's refresh lock, so the claim is an earlier process's that
	// stopped mid-refresh, and is taken over at once.
	if c := f.Conn; c.Refreshing && e.shared != nil && e.clock.Now().Before(c.RefreshingSince.Add(e.refreshClaimTTL())) {
		if err := e.awaitRefresh(ctx, key, f); err != nil {
			return nil, st, err
		}
		return nil, st, errRefreshedElsewhere
	}
	if st, err = e.tokens.LoadToken(ctx, key); err != nil {
		return nil, st, err
	}
	if !e.refreshDue(st, forced) || st.Flow != f.ID {
		return nil, st, errRefreshedElsewhere
	}
	cl := &claim{flow: f, index: -1}
	if _, err := e.commit(ctx, cl, e.record(cl, states.RefreshStarted, states.Data{TokenEvents: &states.TokenEvents{RefreshFP: e.fingerprint(st.RefreshToken)}}), nil); err != nil {
		if conflict(err) {
			return nil, st, err // another writer advanced the flow: look again
		}
		return nil, st, fmt.Errorf("refresh token for %s: %w", key.Provider, err)
	}
	return cl, st, nil
}

// refreshClaimTTL is how long another engine's refresh_started holds the
// refresh: its exchange timeout, and as long again to record the outcome.
// Past it, that engine is taken to have stopped and the refresh is taken over.
func (e *Engine) refreshClaimTTL() time.Duration { return 2 * e.cfg.ExchangeTimeout }

// connectionFlow reads the flow a token's events are recorded on; ok is
// false when it holds no active connection to record on (pruned, or not
// the flow that stored this token).
func (e *Engine) connectionFlow(ctx context.Context, id string) (states.Flow, bool, error) {
	history, err := e.log.History(ctx, id)
	if err != nil {
		return states.Flow{}, false, fmt.Errorf("read the connection's flow: %w", err)
	}
	if len(history) == 0 {
		return states.Flow{}, false, nil
	}
	f, err := states.Fold(history)
	if err != nil {
		return states.Flow{}, false, fmt.Errorf("read the connection's flow: %w", err)
	}
	return f, f.Conn != nil && f.Conn.Active(), nil
}

// awaitRefresh polls the connection's flow until the refresh under way
// elsewhere records its outcome (nil for a success, its *RefreshError for
// a failure), or its claim runs out (nil: the caller looks again and takes
// it over).
func (e *Engine) awaitRefresh(ctx context.Context, key TokenKey, f states.Flow) error {
	since := f.Conn.RefreshingSince
	wait := time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("refresh token for %s: wait for another engine's refresh: %w", key.Provider, ctx.Err())
		case <-e.closing:
			return ErrClosed
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
		g, ok, err := e.connectionFlow(ctx, f.ID)
		if err != nil || !ok {
			return err
		}
		c := g.Conn
		if c.Refreshing && c.RefreshingSince.Equal(since) && e.clock.Now().Before(since.Add(e.refreshClaimTTL())) {
			continue
		}
		if f := c.LastFailure; !c.Refreshing && f != nil && !f.Time.Before(since) {
			return &RefreshError{Provider: key.Provider, Account: key.Account, ErrorCode: f.ErrorCode, Message: f.Message, HTTPStatus: f.HTTPStatus, Transient: f.Transient}
		}
		return nil
	}
}

// refresh1 calls the token endpoint for a claimed refresh and records and
// stores its outcome. The caller holds key's refresh lock.
func (e *Engine) refresh1(ctx context.Context, p *provider, key TokenKey, st StoredToken, cl *claim) (*oauth2.Token, StoredToken, *states.Flow, error) {
	// The outcome is recorded even if the caller goes away: the refresh
	// token may be spent.
	bg := context.WithoutCancel(ctx)
	rctx, cancel := context.WithTimeout(context.WithValue(bg, oauth2.HTTPClient, e.tokenClient(p)), e.cfg.ExchangeTimeout)
	defer cancel()
	expired := oauthToken(st)
	expired.Expiry = time.Unix(1, 0) // force the refresh whatever oauth2's own clock says
	fresh, err := p.oauth.TokenSource(rctx, expired).Token()
	if err != nil {
		d := describeExchangeError(err, rctx.Err(), e.cfg.ExchangeTimeout, st.RefreshToken, st.AccessToken, p.ClientSecret)
		if transient(err, d) {
			d.TokenEvents = &states.TokenEvents{Transient: true}
		}
		isTransient := d.TokenEvents != nil && d.Transient
		rerr := &RefreshError{Provider: key.Provider, Account: key.Account, ErrorCode: d.ErrorCode, Message: d.Message, HTTPStatus: d.HTTPStatus, Transient: isTransient, Err: err}
		e.logger.Warn("token refresh failed", "provider", key.Provider, "error_code", d.ErrorCode, "http_status", d.HTTPStatus, "transient", isTransient)
		if cl != nil {
			_, cerr := e.commitOutcome(bg, cl, states.RefreshFailed, d, nil)
			if errors.Is(cerr, errClaimLost) {
				// Another engine's refresh was recorded first: if it
				// stored a fresh token, that is the answer.
				if cur, lerr := e.tokens.LoadToken(bg, key); lerr == nil && !e.refreshDue(cur, "") {
					return oauthToken(cur), cur, nil, nil
				}
				return nil, st, nil, rerr
			}
			if cerr != nil {
				return nil, st, nil, errors.Join(rerr, fmt.Errorf("record the failed refresh: %w", cerr))
			}
			return nil, st, &cl.flow, rerr
		}
		return nil, st, nil, rerr
	}
	rotated := fresh.RefreshToken != "" && fresh.RefreshToken != st.RefreshToken
	st.AccessToken, st.Expiry = fresh.AccessToken, e.expiry(fresh)
	// A new access token: obtained_at says how old the one in hand is.
	st.Obtained = e.clock.Now().UTC()
	if fresh.TokenType != "" {
		st.TokenType = fresh.TokenType
	}
	if fresh.RefreshToken != "" {
		st.RefreshToken = fresh.RefreshToken
	}
	named := grantedScopes(fresh, nil)
	if len(named) > 0 {
		st.Scopes = named
	}
	var tok states.TokenEvents
	tok.Rotated = rotated
	if !st.Expiry.IsZero() {
		exp := st.Expiry
		tok.TokenExpiry = &exp
	}
	if rotated {
		tok.RefreshFP = e.fingerprint(st.RefreshToken)
	}
	d := states.Data{GrantedScopes: named}
	if tok != (states.TokenEvents{}) {
		// Left nil when empty, as the record decodes.
		d.TokenEvents = &tok
	}
	var secrets map[string][]byte
	lt, inLog := e.tokens.(*logTokens)
	if inLog && cl != nil {
		// The token lands with the record saying it was refreshed: one
		// append, so no reader sees one without the other.
		b, err := lt.encode(key, st)
		if err != nil {
			return nil, st, nil, err
		}
		secrets = map[string][]byte{lt.key(key): b}
	} else if err := e.tokens.SaveToken(bg, key, st); err != nil {
		return nil, st, nil, fmt.Errorf("refresh token for %s: save the refreshed token: %w", key.Provider, err)
	}
	var changed *states.Flow
	if cl != nil {
		if _, err := e.commitOutcome(bg, cl, states.TokenRefreshed, d, secrets); err != nil {
			return nil, st, nil, fmt.Errorf("refresh token for %s: record the refresh: %w", key.Provider, err)
		}
		changed = &cl.flow
	}
	e.logger.Info("token refreshed", "provider", key.Provider, "rotated", rotated)
	return oauthToken(st), st, changed, nil
}

// commitOutcome records a refresh's outcome on cl, after any record
// another writer appended meanwhile (a callback ignored on the flow). If
// the refresh outlived its claim and another engine's outcome was
// recorded first, a success is recorded all the same, with a
// refresh_started of its own (the provider issued this token last: with
// rotating refresh tokens the other refresh failed or its token is
// already replaced), and a failure returns errClaimLost unrecorded: the
// other engine's outcome stands.
func (e *Engine) commitOutcome(ctx context.Context, cl *claim, ev states.Event, d states.Data, secrets map[string][]byte) (states.Flow, error) {
	reclaimed := false
	for attempt := 0; ; attempt++ {
		recs := e.record(cl, ev, d)
		if reclaimed {
			start := e.record(cl, states.RefreshStarted, states.Data{})
			recs[0].FlowSeq++
			recs = append(start, recs...)
		}
		f, err := e.commit(ctx, cl, recs, secrets)
		if err == nil || !conflict(err) || attempt == outcomeRetries {
			return f, err
		}
		g, ok, rerr := e.connectionFlow(ctx, cl.flow.ID)
		if rerr != nil || !ok {
			return f, err
		}
		cl.flow = g
		if !g.Conn.Refreshing {
			if ev != states.TokenRefreshed {
				return g, errClaimLost
			}
			reclaimed = true
		}
	}
}

// errClaimLost: a refresh outlived its claim, and another engine's
// refresh of the same token was recorded first.
var errClaimLost = errors.New("the refresh outlived its claim; another engine's refresh was recorded first")

// transient classifies a failed refresh: no answer, a timeout, or an
// HTTP 5xx or 429 may pass; an OAuth error answer is the provider's
// decision.
func transient(err error, d states.Data) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return d.HTTPStatus >= 500 || d.HTTPStatus == 429 || (re.ErrorCode == "" && d.HTTPStatus == 0)
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || d.ErrorCode == "timeout"
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
