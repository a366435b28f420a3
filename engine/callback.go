package engine

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// Callback delivers the provider's redirect for a flow. A provider error
// ends the flow error(provider_denied); a code is exchanged once, with the
// flow's PKCE verifier, and the flow ends complete or error(exchange_failed).
//
// It returns the flow as the callback left it. A callback that cannot be
// applied returns an error: ErrUnknownState (nothing recorded), or a
// *FlowError wrapping ErrNotAwaiting (finished or mid-exchange: recorded in
// the flow's history as callback_ignored) or ErrExpired.
func (e *Engine) Callback(ctx context.Context, p CallbackParams) (states.Flow, error) {
	if err := e.enter(); err != nil {
		return states.Flow{}, err
	}
	defer e.inflight.Done()
	fp := ""
	if p.Code != "" {
		fp = e.fingerprint(p.Code)
	}
	lf, err := e.hold(ctx, p.State)
	if err != nil {
		return states.Flow{}, fmt.Errorf("callback: read the flow: %w", err)
	}
	if lf == nil {
		return e.ignoreFinished(ctx, p.State, fp)
	}
	for attempt := 0; ; attempt++ {
		f, err, again := e.callback(ctx, lf, p, fp)
		if !again || attempt == conflictRetries {
			if err == nil && f.State == states.Complete {
				e.connectionChanged(f) // this callback connected: the flow's lock is released
			}
			return f, err
		}
		// Another engine on a shared log advanced the flow first; lf now
		// holds what it became: decide again.
	}
}

// callback is Callback on a flow this engine holds. again reports a lost
// race before anything was done that cannot be repeated: the flow was
// re-read and the callback may be decided again.
func (e *Engine) callback(ctx context.Context, lf *liveFlow, p CallbackParams, fp string) (_ states.Flow, _ error, again bool) {
	lf.mu.Lock()
	locked := true
	defer func() {
		if locked {
			lf.mu.Unlock()
		}
	}()
	f := lf.flow
	switch {
	case f.State.Terminal():
		lf.mu.Unlock()
		locked = false
		f, err := e.ignoreFinished(ctx, p.State, fp)
		return f, err, false
	case f.Transport == states.Device:
		// A device flow has no redirect: a callback naming it (a guessed
		// or replayed state) is refused, and changes nothing.
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}, false
	case f.Exchanging:
		f, err := e.commit(ctx, lf, e.record(lf, states.CallbackIgnored, states.Data{Ignored: states.IgnoredInProgress, CodeFingerprint: fp}), nil)
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}, false
	case f.State != states.AwaitingCallback:
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}, false
	case !e.clock.Now().Before(f.Deadline):
		f, err := e.commit(ctx, lf, e.record(lf, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired}), e.dropFlowSecrets(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, &FlowError{Flow: f, Err: ErrExpired}, false
	}
	// A bound flow hears only its own browser, for an error as much as for
	// a code: a forged error=access_denied (or a forged iss) must not end it
	// either. So the binding is checked before anything the callback says.
	if kind, refused := e.checkBinding(f, p); refused != nil {
		f, err := e.commit(ctx, lf, e.record(lf, states.CallbackIgnored, states.Data{Ignored: kind, CodeFingerprint: fp}), nil)
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		e.logger.Warn("callback refused: not from the browser the flow is bound to", "flow", states.ShortID(f.ID), "provider", f.Provider, "why", kind)
		return f, &FlowError{Flow: f, Err: refused}, false
	}
	switch {
	case issuerProblem(f, p.Issuer) != "":
		// Before the provider's error and before the exchange: a redirect
		// from another server must neither end the flow as that server's
		// denial nor have its code sent to this provider's token endpoint.
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.IssuerMismatch, Message: redact(issuerProblem(f, p.Issuer), []string{p.Code}), CodeFingerprint: fp,
		}), e.dropFlowSecrets(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		e.logger.Warn("callback refused: issuer mismatch", "flow", states.ShortID(f.ID), "provider", f.Provider, "expected_issuer", f.Issuer)
		return f, nil, false
	case p.Error != "":
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.ProviderDenied, ErrorCode: clip(redact(p.Error, []string{p.Code}), 200), Message: clip(redact(p.ErrorDescription, []string{p.Code}), 500),
		}), e.dropFlowSecrets(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, nil, false
	case p.Code == "":
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.InvalidCallback, Message: "the callback carried neither a code nor an error",
		}), e.dropFlowSecrets(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, nil, false
	}
	// The provider is read once, here: the exchange uses these settings
	// even if the providers change while it runs. A provider removed while
	// the flow waited ends it before exchange_started: its code is never
	// sent to a server the engine no longer trusts with it.
	prov, err := e.resolve(ctx, f.Provider)
	if err != nil {
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.ProviderRemoved, Message: fmt.Sprintf("provider %q was removed before the callback arrived; the code was not used", clip(f.Provider, 100)),
		}), e.dropFlowSecrets(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, nil, false
	}
	if lf.perStart {
		// The flow's own client, never the configured one: its code was
		// issued to that client, and the user chose it.
		c := lf.client
		if c == nil {
			if c, err = e.readClient(ctx, flowClientPrefix+f.ID); err != nil {
				return f, fmt.Errorf("callback: read the flow's client: %w", err), false
			}
		}
		if c == nil {
			// As a missing verifier: exchange ends the flow
			// exchange_failed(client_missing) without sending the code.
			prov = nil
		} else {
			prov = prov.withClient(c)
		}
	}
	verifier, ok := lf.verifier, lf.verifier != ""
	if !ok {
		plain, found, err := e.log.Secret(ctx, verifierKeyPrefix+f.ID)
		if err != nil {
			return f, fmt.Errorf("callback: read the flow's PKCE verifier: %w", err), false
		}
		verifier, ok = string(plain), found
	}
	nonce := lf.nonce
	if nonce == "" && f.NonceFingerprint != "" {
		// Missing, it stays "": an ID token then fails its nonce check.
		plain, _, err := e.log.Secret(ctx, nonceKeyPrefix+f.ID)
		if err != nil {
			return f, fmt.Errorf("callback: read the flow's nonce: %w", err), false
		}
		nonce = string(plain)
	}
	// Only the engine whose exchange_started lands redeems the code.
	if _, err := e.commit(ctx, lf, e.record(lf, states.ExchangeStarted, states.Data{CodeFingerprint: fp}), nil); err != nil {
		return lf.flow, fmt.Errorf("callback: %w", err), conflict(err)
	}
	lf.verifier, lf.nonce, lf.client = "", "", nil // the code is spent: nothing redeems it again
	// The exchange runs without the flow's lock, so a repeated callback is
	// recorded at once as ignored instead of queueing behind the exchange.
	lf.exchanging = true
	lf.mu.Unlock()
	locked = false
	// The outcome is recorded even if the caller goes away: the code is spent.
	bg := context.WithoutCancel(ctx)
	outcome := e.exchange(bg, prov, f, p.Code, verifier, ok, nonce)
	lf.mu.Lock()
	locked = true
	lf.exchanging = false
	for attempt := 0; ; attempt++ {
		secrets := e.dropFlowSecrets(lf)
		maps.Copy(secrets, outcome.secrets)
		f, err = e.commit(bg, lf, e.record(lf, outcome.event, outcome.data), secrets)
		// Another engine on a shared log may have recorded a callback
		// ignored meanwhile: record the outcome after it. The code is
		// spent, so the callback is never decided again.
		if err == nil || !conflict(err) || !lf.flow.Exchanging || attempt == outcomeRetries {
			break
		}
	}
	if err != nil {
		return f, fmt.Errorf("callback: %w", err), false
	}
	return f, nil, false
}

// issuerProblem says why a redirect's iss does not fit the flow (RFC 9207
// section 2.4: compared as exact strings, and missing counts when the
// server promised iss), or "" when it fits. A flow with no expected issuer
// takes any iss. The iss is the redirect's own text: clipped, it names
// what arrived without letting a long one fill the record.
func issuerProblem(f states.Flow, iss string) string {
	switch {
	case f.Issuer == "":
		return ""
	case iss == "" && f.IssuerRequired:
		return fmt.Sprintf("the redirect carried no iss, but issuer %s sends one on every redirect (RFC 9207); the code was not sent to the token endpoint", f.Issuer)
	case iss != "" && iss != f.Issuer:
		return fmt.Sprintf("the redirect's iss is %q, not the expected issuer %s (RFC 9207): it may come from another authorization server; the code was not sent to the token endpoint", clip(iss, 200), f.Issuer)
	}
	return ""
}

type outcome struct {
	event states.Event
	data  states.Data
	// secrets are written with the outcome's record (the token).
	secrets map[string][]byte
}

// exchange redeems the code at the token endpoint, establishes who signed
// in (Config.Identify), and stores the token, or, when tokens are kept in
// the log, returns it in the outcome's secrets. A token whose user is not
// established is not stored: an earlier connection of the account stays.
// p is nil for a flow whose per-start client is missing: it fails unsent.
func (e *Engine) exchange(ctx context.Context, p *provider, f states.Flow, code, verifier string, haveVerifier bool, nonce string) outcome {
	failed := func(d states.Data) outcome {
		d.Reason = states.ExchangeFailed
		e.logger.Warn("exchange failed", "flow", states.ShortID(f.ID), "provider", f.Provider, "http_status", d.HTTPStatus, "error_code", d.ErrorCode)
		return outcome{event: states.Failed, data: d}
	}
	if !haveVerifier {
		return failed(states.Data{ErrorCode: "verifier_missing", Message: "the flow's PKCE verifier is missing from the sealed store; start a new connect"})
	}
	if p == nil {
		return failed(states.Data{ErrorCode: "client_missing", Message: "the flow's per-start client is missing from the sealed store, and the provider's configured client cannot redeem a code issued to it; the code was not used; start a new connect"})
	}
	oc := p.oauth
	oc.RedirectURL = f.RedirectURI
	oc.Scopes = f.Scopes
	xctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, e.tokenClient(p)), e.cfg.ExchangeTimeout)
	defer cancel()
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(verifier)}
	if p.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", p.Resource))
	}
	tok, err := oc.Exchange(xctx, code, opts...)
	if err != nil {
		return failed(describeExchangeError(err, xctx.Err(), e.cfg.ExchangeTimeout, code, verifier, p.ClientSecret))
	}
	return e.storeToken(ctx, p, f, tok, nonce, code, verifier)
}

// storeToken establishes who the token a flow obtained belongs to
// (Config.Identify), stores it, or, when tokens are kept in the log,
// returns it in the outcome's secrets. sent are the secrets the flow sent
// to get it (a code and verifier, or a device code), redacted from any
// message. The code exchange and the device transport's poll share it.
func (e *Engine) storeToken(ctx context.Context, p *provider, f states.Flow, tok *oauth2.Token, nonce string, sent ...string) outcome {
	failed := func(d states.Data) outcome {
		d.Reason = states.ExchangeFailed
		e.logger.Warn("exchange failed", "flow", states.ShortID(f.ID), "provider", f.Provider, "http_status", d.HTTPStatus, "error_code", d.ErrorCode)
		return outcome{event: states.Failed, data: d}
	}
	id, fail := e.identify(ctx, p, f, tok, nonce, sent...)
	if fail != nil {
		return *fail
	}
	account := f.Account
	if id.Account != "" {
		account = id.Account
	}
	granted := grantedScopes(tok, f.Scopes)
	now := e.clock.Now().UTC()
	st := StoredToken{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType, RefreshToken: tok.RefreshToken,
		Expiry: e.expiry(tok), Scopes: granted, Flow: f.ID, Obtained: now,
	}
	if p.client != nil {
		st.ClientID = p.client.ID
	}
	key := TokenKey{Provider: f.Provider, Account: account}
	// The connection's client lands with its token, in the outcome's
	// append: a per-start one sealed under the token's key, and any
	// earlier connection's per-start client deleted when the configured
	// client replaces it (nil), so no client secret outlives its token.
	secrets := map[string][]byte{}
	switch {
	case p.client != nil:
		secrets[connClientKey(key)] = encodeClient(p.client)
	case e.shared != nil || e.conns.mayHoldClient(key):
		// On a shared log another engine's per-start connect may not have
		// reached this one's index yet: delete whatever is there.
		secrets[connClientKey(key)] = nil
	}
	if lt, ok := e.tokens.(*logTokens); ok {
		// Tokens kept in the log's secrets go in the append that records
		// the outcome: one commit instead of two, and the token lands
		// exactly when the record saying it was stored does.
		b, err := lt.encode(key, st)
		if err != nil {
			return failed(states.Data{ErrorCode: "token_not_stored", Message: "the token could not be stored: " + err.Error()})
		}
		secrets[lt.key(key)] = b
	} else if err := e.tokens.SaveToken(ctx, key, st); err != nil {
		return failed(states.Data{ErrorCode: "token_not_stored", Message: "the token could not be stored: " + err.Error()})
	}
	if e.logger.Enabled(context.Background(), slog.LevelInfo) { // the context Info uses
		e.logger.Info("flow complete", "flow", states.ShortID(f.ID), "provider", f.Provider, "account", account, "scopes", strings.Join(granted, " "))
	}
	d := states.Data{
		Reason: states.Exchanged, GrantedScopes: granted, TokenStored: true,
		// The account is recorded when the identity named it; otherwise it
		// is the created record's (records stay small on the hot path).
		Account: id.Account, Subject: id.Subject, Email: id.Email,
	}
	// The token fields are set only when there is one: a group left empty
	// stays nil, as the record decodes.
	var te states.TokenEvents
	if !st.Expiry.IsZero() {
		exp := st.Expiry
		te.TokenExpiry = &exp
	}
	if st.RefreshToken != "" {
		te.RefreshFP = e.fingerprint(st.RefreshToken)
	}
	if te != (states.TokenEvents{}) {
		d.TokenEvents = &te
	}
	return outcome{event: states.ExchangeSucceeded, data: d, secrets: secrets}
}

// identify runs Config.Identify on a freshly exchanged token. A failure,
// or a user other than the account the flow was started for, is returned
// as the flow's outcome; the other secrets of the exchange are redacted
// from the hook's words.
func (e *Engine) identify(ctx context.Context, p *provider, f states.Flow, tok *oauth2.Token, nonce string, sent ...string) (Identity, *outcome) {
	if e.cfg.Identify == nil {
		return Identity{}, nil
	}
	ictx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, e.http), e.cfg.ExchangeTimeout)
	defer cancel()
	id, err := e.cfg.Identify(ictx, p.Provider, tok, nonce)
	secrets := append([]string{tok.AccessToken, tok.RefreshToken, nonce, p.ClientSecret}, sent...)
	if raw, ok := tok.Extra("id_token").(string); ok {
		secrets = append(secrets, raw)
	}
	fail := func(reason states.Reason, code, msg string) (Identity, *outcome) {
		d := states.Data{Reason: reason, ErrorCode: code, Message: clip(redact(msg, secrets), 500)}
		e.logger.Warn("identity not established", "flow", states.ShortID(f.ID), "provider", f.Provider, "reason", reason, "error_code", code)
		return Identity{}, &outcome{event: states.Failed, data: d}
	}
	if err != nil {
		return fail(states.IdentityInvalid, "identity_invalid", err.Error())
	}
	if f.Account != "" && id.Account != "" && id.Account != f.Account {
		return fail(states.AccountMismatch, "account_mismatch",
			fmt.Sprintf("signed in as %q, but this connect was for account %q; sign in as %q, or connect without naming an account", id.Account, f.Account, f.Account))
	}
	return id, nil
}

// describeExchangeError turns an exchange error into record data. It keeps
// the HTTP status and the provider's error code and description, never the
// response body, which could carry a token. The provider's text is its
// own: one that echoes the request would put the code, verifier or client
// secret in the log, so the secrets sent are redacted from it (before it
// is clipped, so no half of a secret survives either).
func describeExchangeError(err, ctxErr error, timeout time.Duration, sent ...string) states.Data {
	text := func(s string, n int) string { return clip(redact(s, sent), n) }
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		d := states.Data{ErrorCode: text(re.ErrorCode, 200), Message: text(re.ErrorDescription, 500)}
		if re.Response != nil {
			d.HTTPStatus = re.Response.StatusCode
		}
		if d.ErrorCode == "" {
			d.ErrorCode = "http_error"
		}
		if d.Message == "" && re.Response != nil {
			d.Message = fmt.Sprintf("the token endpoint answered %s", re.Response.Status)
			if ct := re.Response.Header.Get("Content-Type"); ct != "" {
				d.Message += " (" + text(ct, 100) + ")"
			}
		}
		return d
	case errors.Is(ctxErr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return states.Data{ErrorCode: "timeout", Message: fmt.Sprintf("the token endpoint did not answer within %s", timeout)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return states.Data{ErrorCode: "timeout", Message: fmt.Sprintf("the token endpoint did not answer within %s", timeout)}
		}
		return states.Data{ErrorCode: "network_error", Message: text(ue.Err.Error(), 300)}
	}
	// oauth2's own errors: a 200 that is not a token (HTML, garbage, no access_token).
	return states.Data{ErrorCode: "invalid_response", Message: text(strings.TrimPrefix(err.Error(), "oauth2: "), 300)}
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// grantedScopes reads the token's scope field (space separated in JSON,
// comma separated in some form responses); without one, the requested
// scopes were granted.
func grantedScopes(tok *oauth2.Token, requested []string) []string {
	var raw string
	switch v := tok.Extra("scope").(type) {
	case string:
		raw = v
	case []any:
		parts := make([]string, 0, len(v))
		for _, s := range v {
			if s, ok := s.(string); ok {
				parts = append(parts, s)
			}
		}
		raw = strings.Join(parts, " ")
	}
	fields := strings.FieldsFunc(raw, func(r rune) bool { return r == ' ' || r == ',' })
	if len(fields) == 0 {
		return slices.Clone(requested)
	}
	return fields
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ignoreFinished records a callback for a flow that is no longer live. The
// flow's history is read back from the log; a conflicting writer is
// retried, since the append is a compare-and-set on the flow's sequence.
//
// The callbacks this engine ignores on one flow take turns: a burst of
// them (a browser re-sending the redirect, a proxy retrying it) would
// otherwise race each other for the same sequence number, one winner a
// round, and a caller losing conflictRetries+1 rounds would get a
// conflict error instead of ErrNotAwaiting, its callback unrecorded. The
// retries are left to other writers: another engine on a shared log, or
// this engine's token records on a complete flow.
func (e *Engine) ignoreFinished(ctx context.Context, state, fp string) (states.Flow, error) {
	unlock := e.ignoring.lock(state)
	defer unlock()
	for attempt := 0; ; attempt++ {
		history, err := e.log.History(ctx, state)
		if err != nil {
			return states.Flow{}, fmt.Errorf("callback: read history: %w", err)
		}
		if len(history) == 0 {
			if e.hooks.UnknownCallback != nil {
				e.hooks.UnknownCallback()
			}
			return states.Flow{}, fmt.Errorf("callback for state %s: %w", states.ShortID(state), ErrUnknownState)
		}
		f, err := states.Fold(history)
		if err != nil {
			return states.Flow{}, fmt.Errorf("callback: %w", err)
		}
		if !f.State.Terminal() {
			// Live in the log but not in this engine: another writer owns it.
			return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
		}
		tmp := &liveFlow{flow: f, index: -1}
		f, err = e.commit(ctx, tmp, e.record(tmp, states.CallbackIgnored, states.Data{Ignored: states.IgnoredFinished, CodeFingerprint: fp}), nil)
		if errors.Is(err, ErrConflict) && attempt < conflictRetries {
			continue
		}
		if err != nil {
			return f, fmt.Errorf("callback: %w", err)
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
}

// flowLocks is a mutex per flow, kept only while someone holds or awaits
// it: finished flows are never forgotten by the log, so a map keeping a
// mutex for every flow that ever had a late callback would grow for ever.
// The zero value is ready to use.
type flowLocks struct {
	mu    sync.Mutex
	locks map[string]*flowLock
}

type flowLock struct {
	sync.Mutex
	users int // holders and waiters, guarded by flowLocks.mu
}

// lock takes id's mutex and returns what releases it.
func (l *flowLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*flowLock{}
	}
	fl := l.locks[id]
	if fl == nil {
		fl = &flowLock{}
		l.locks[id] = fl
	}
	fl.users++
	l.mu.Unlock()
	fl.Lock()
	return func() {
		fl.Unlock()
		l.mu.Lock()
		if fl.users--; fl.users == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}
}

// fingerprint is a keyed hash of a secret, for correlating it in the log
// without revealing it.
func (e *Engine) fingerprint(secret string) string {
	m, _ := e.fpMACs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, e.fpKey)
	}
	m.Reset()
	_, _ = io.WriteString(m, secret)
	var sum [sha256.Size]byte
	var out [len("hmac:") + 24]byte
	copy(out[:], "hmac:")
	hex.Encode(out[len("hmac:"):], m.Sum(sum[:0])[:12])
	e.fpMACs.Put(m)
	return string(out[:])
}
