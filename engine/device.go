package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// The device authorization grant (RFC 8628). A device flow has no redirect:
// Start asks the provider's device authorization endpoint for a device code
// and a user code, records created and device_authorized in one append (the
// codes sealed with it), and the engine's one timer polls the token
// endpoint on the schedule the log records. A poll is not recorded before
// it is made, unlike a code's exchange_started: a device code is meant to
// be presented many times (section 3.4), so a restart mid-poll loses at
// most that poll's answer, and polling resumes at the next point of the
// recorded schedule. Should the lost answer have been the token, the
// provider answers the next poll with an error (the code is spent), which
// ends the flow exchange_failed: never a token stored twice, never a flow
// left waiting.

// deviceGrantType is the grant_type of a device access token request (section 3.4).
const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// DefaultPollInterval is the poll interval when the provider names none
// (RFC 8628 section 3.2: "If no value is provided, clients MUST use 5").
const DefaultPollInterval = 5 * time.Second

// slowDownStep is what slow_down adds to the interval, for the rest of the
// flow (section 3.5). flowd adds it too when a poll gets no answer: the
// section asks a client to poll less often after a connection timeout.
const slowDownStep = 5 * time.Second

// deviceKeyPrefix keys a device flow's sealed codes in the Log's secrets.
const deviceKeyPrefix = "device/"

// DeviceCode is what a user needs to approve a device flow: the user code
// and where to enter it. It is a secret of the flow (sealed, never in the
// log), shown only to the caller that started or waits on the flow.
type DeviceCode struct {
	UserCode        string
	VerificationURI string
	// VerificationURIComplete carries the user code already, when the
	// provider gives one (for a QR code or a link).
	VerificationURIComplete string
	// NextPoll is when the engine polls the token endpoint next. It is
	// zero from DeviceCode on an engine that does not poll the flow (it
	// was started by another engine on a shared log that is not a
	// Claimer).
	NextPoll time.Time
}

// deviceSecret is the sealed form of a device flow's codes.
type deviceSecret struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	// Client is the flow's per-start client (StartRequest.Client): the
	// device code was issued to it, so every poll authenticates as it.
	Client *sealedClient `json:"client,omitempty"`
}

// deviceState is what the engine keeps of a live device flow beyond its
// states.Flow. All fields are guarded by liveFlow.mu.
type deviceState struct {
	// secret is nil until read from the sealed store (a flow loaded from
	// the log) or set by Start.
	secret *deviceSecret
	// pollAt is the next poll; zero until computed from the flow.
	pollAt time.Time
	// polling is true while this engine claims the flow or waits for a
	// poll's answer.
	polling bool
	// claimed: this engine took the flow's claim (Claimer), to release
	// when the flow ends here.
	claimed bool
}

// pass moves d's next poll past the schedule point at (a poll made or
// left to another engine) to the next point after now and, when this
// engine sent a poll at sent, to a point a whole interval after it: a
// poll sent late (its claim, a busy timer) must not make the next one come
// sooner than the interval, which a strict server answers slow_down.
func (d *deviceState) pass(f states.Flow, at, now, sent time.Time) {
	d.pollAt = f.NextPollAfter(at.Add(time.Nanosecond))
	if !d.pollAt.After(now) {
		d.pollAt = f.NextPollAfter(now.Add(time.Nanosecond))
	}
	if floor := sent.Add(f.PollInterval); !sent.IsZero() && d.pollAt.Before(floor) {
		d.pollAt = f.NextPollAfter(floor)
	}
}

// pollsDevice reports whether this engine may poll f: a device flow on a
// log this engine alone uses, or on a shared log that grants claims. On a
// shared log that does not, only the engine that started f polls it.
func (e *Engine) pollsDevice(f states.Flow) bool {
	return f.Transport == states.Device && (e.shared == nil || e.claims != nil)
}

// claimPoll reports whether this engine may make the poll due now: on a
// shared log, whether it holds the flow's claim. An engine that cannot
// tell (the log is unavailable) does not poll: it could not record the
// answer either. The caller holds no lock.
func (e *Engine) claimPoll(ctx context.Context, flow string) bool {
	if e.claims == nil {
		return true
	}
	held, err := e.claims.Claim(ctx, deviceKeyPrefix+flow)
	if err != nil {
		e.logger.Warn("could not claim a device flow's poll; trying again at its next poll", "flow", states.ShortID(flow), "err", err)
		return false
	}
	return held
}

// releasePoll gives up lf's claim once the flow ended on this engine, so
// the claims of finished flows do not pile up in the shared log until the
// process stops. The caller holds lf.mu.
func (e *Engine) releasePoll(lf *liveFlow) {
	if e.claims == nil || lf.dev == nil || !lf.dev.claimed {
		return
	}
	lf.dev.claimed = false
	if e.enter() != nil {
		return // closing: the claim lapses with the log's lease
	}
	go func(key string) {
		defer e.inflight.Done()
		ctx, cancel := context.WithTimeout(e.background, e.cfg.ExchangeTimeout)
		defer cancel()
		if err := e.claims.Release(ctx, key); err != nil {
			e.logger.Warn("could not release a finished device flow's claim; it lapses with this replica's lease", "flow", states.ShortID(key[len(deviceKeyPrefix):]), "err", err)
		}
	}(deviceKeyPrefix + lf.flow.ID)
}

// ErrNoDeviceEndpoint: the provider has no device authorization endpoint.
var ErrNoDeviceEndpoint = errors.New("provider has no device authorization endpoint")

// ErrDeviceAuthorization: the device authorization endpoint refused the
// request or answered something that is not a device authorization. The
// error is a *DeviceAuthorizationError.
var ErrDeviceAuthorization = errors.New("device authorization failed")

// DeviceAuthorizationError is the device authorization endpoint's refusal,
// with the provider's own error code and text (secrets redacted).
type DeviceAuthorizationError struct {
	HTTPStatus  int
	ErrorCode   string
	Description string
}

func (e *DeviceAuthorizationError) Error() string {
	msg := ErrDeviceAuthorization.Error()
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.ErrorCode != "" {
		msg += ": " + e.ErrorCode
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// Is makes errors.Is(err, ErrDeviceAuthorization) true.
func (e *DeviceAuthorizationError) Is(target error) bool { return target == ErrDeviceAuthorization }

// deviceAuthResponse is the device authorization response (section 3.2).
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURL         string `json:"verification_url"` // Google's spelling
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
	ErrorCode               string `json:"error"`
	ErrorDescription        string `json:"error_description"`
}

// startDevice is Start for the device transport. StartRequest.Launch is
// ignored: a device flow has no authorization URL to launch.
func (e *Engine) startDevice(ctx context.Context, p *provider, req StartRequest, scopes []string) (Started, error) {
	if p.DeviceAuthURL == "" {
		return Started{}, fmt.Errorf("start %s: %w", p.Name, ErrNoDeviceEndpoint)
	}
	da, err := e.requestDeviceCode(ctx, p, scopes)
	if err != nil {
		return Started{}, fmt.Errorf("start %s: %w", p.Name, err)
	}
	state, _, _, err := e.newFlowSecrets(false)
	if err != nil {
		return Started{}, fmt.Errorf("start %s: make state token: %w", p.Name, err)
	}
	now := e.clock.Now().UTC()
	// The flow lives as long as its device code, or less when asked.
	ttl := time.Duration(da.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = e.cfg.TTL
	}
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	due := now.Add(ttl)
	interval := time.Duration(da.Interval) * time.Second
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	first := now.Add(interval)
	secret := &deviceSecret{DeviceCode: da.DeviceCode, UserCode: da.UserCode, VerificationURIComplete: da.VerificationURIComplete, Client: p.client}
	sealed, err := json.Marshal(secret)
	if err != nil {
		return Started{}, fmt.Errorf("start %s: seal the device code: %w", p.Name, err)
	}
	lf := &liveFlow{done: make(chan struct{}), index: -1, dev: &deviceState{secret: secret, pollAt: first}}
	created := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 1, Event: states.Created, To: states.Pending, Time: now,
		Data: states.Data{Provider: p.Name, Account: req.Account, Scopes: slices.Clone(scopes), Transport: states.Device, Deadline: &due},
	}
	createdClientData(&created.Data, p.client)
	authorized := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 2, Event: states.DeviceAuthorized,
		From: states.Pending, To: states.AwaitingCallback, Time: now,
		Data: states.Data{DevicePolling: &states.DevicePolling{VerificationURI: da.VerificationURI, PollInterval: int(interval / time.Second), NextPoll: &first}},
	}
	e.mu.Lock()
	e.starting[state] = true
	e.mu.Unlock()
	lf.mu.Lock()
	_, err = e.commit(ctx, lf, []states.Record{created, authorized}, map[string][]byte{deviceKeyPrefix + state: sealed})
	lf.mu.Unlock()
	if err != nil {
		e.mu.Lock()
		delete(e.starting, state)
		e.mu.Unlock()
		return Started{}, fmt.Errorf("start %s: %w", p.Name, err)
	}
	born := e.adopt(lf)
	started := Started{
		ID: state, Deadline: due, PollInterval: interval,
		Device: &DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI, VerificationURIComplete: da.VerificationURIComplete},
	}
	started.Superseded = e.supersede(ctx, ownerKey{p.Name, req.Account}, state, born)
	e.logger.Info("flow started", "flow", states.ShortID(state), "provider", p.Name, "transport", states.Device, "deadline", due, "poll_interval", interval)
	return started, nil
}

// requestDeviceCode asks the provider's device authorization endpoint for
// a device code (section 3.1), authenticating a confidential client as at
// the token endpoint.
func (e *Engine) requestDeviceCode(ctx context.Context, p *provider, scopes []string) (deviceAuthResponse, error) {
	form := url.Values{"client_id": {p.ClientID}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	var da deviceAuthResponse
	xctx, cancel := context.WithTimeout(ctx, e.cfg.ExchangeTimeout)
	defer cancel()
	status, body, err := e.postForm(xctx, p, p.DeviceAuthURL, form)
	if err != nil {
		return da, &DeviceAuthorizationError{ErrorCode: "network_error", Description: clip(redact(err.Error(), []string{p.ClientSecret}), 300)}
	}
	jsonErr := json.Unmarshal(body, &da)
	text := func(s string, n int) string { return clip(redact(s, []string{p.ClientSecret, da.DeviceCode}), n) }
	switch {
	case status < 200 || status > 299 || da.ErrorCode != "":
		return da, &DeviceAuthorizationError{HTTPStatus: status, ErrorCode: text(da.ErrorCode, 200), Description: text(da.ErrorDescription, 500)}
	case jsonErr != nil:
		return da, &DeviceAuthorizationError{HTTPStatus: status, ErrorCode: "invalid_response", Description: "the answer is not JSON"}
	}
	if da.VerificationURI == "" {
		da.VerificationURI = da.VerificationURL
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return da, &DeviceAuthorizationError{HTTPStatus: status, ErrorCode: "invalid_response",
			Description: "the answer lacks device_code, user_code or verification_uri (RFC 8628 section 3.2)"}
	}
	return da, nil
}

// postForm posts form to endpoint with the provider's token endpoint auth
// method (RFC 6749 section 2.3.1: client_id alone for none, the secret in
// the form for client_secret_post, in HTTP Basic for client_secret_basic;
// RFC 8628 section 3.1 authenticates the device authorization request
// the same way) and returns the status and at most 1 MiB of the body.
func (e *Engine) postForm(ctx context.Context, p *provider, endpoint string, form url.Values) (int, []byte, error) {
	method := authMethodOf(p.Provider)
	basic := method == AuthMethodClientSecretBasic
	if method == AuthMethodClientSecretPost {
		form.Set("client_secret", p.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(p.ClientID), url.QueryEscape(p.ClientSecret))
	}
	resp, err := e.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the caller's to name
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" || ct == "text/plain" {
		// Some providers (GitHub without Accept) answer a query string.
		if vals, err := url.ParseQuery(string(body)); err == nil && (vals.Has("error") || vals.Has("access_token") || vals.Has("device_code")) {
			m := map[string]any{}
			for k := range vals {
				if n, err := strconv.ParseInt(vals.Get(k), 10, 64); err == nil && (k == "expires_in" || k == "interval") {
					m[k] = n
				} else {
					m[k] = vals.Get(k)
				}
			}
			if b, err := json.Marshal(m); err == nil {
				body = b
			}
		}
	}
	return resp.StatusCode, body, nil
}

// pollAnswer is what one poll of the token endpoint heard.
type pollAnswer struct {
	status int
	// errorCode is the token endpoint's error, "" with a token, or
	// timeout / network_error when no answer came.
	errorCode, description string
	token                  *oauth2.Token
}

// pollToken makes one device access token request (section 3.4).
func (e *Engine) pollToken(ctx context.Context, p *provider, code string) pollAnswer {
	form := url.Values{"grant_type": {deviceGrantType}, "device_code": {code}, "client_id": {p.ClientID}}
	xctx, cancel := context.WithTimeout(ctx, e.cfg.ExchangeTimeout)
	defer cancel()
	status, body, err := e.postForm(xctx, p, p.TokenURL, form)
	text := func(s string, n int) string { return clip(redact(s, []string{code, p.ClientSecret}), n) }
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || xctx.Err() != nil {
			return pollAnswer{errorCode: "timeout", description: fmt.Sprintf("the token endpoint did not answer within %s", e.cfg.ExchangeTimeout)}
		}
		return pollAnswer{errorCode: "network_error", description: text(err.Error(), 300)}
	}
	var tr struct {
		AccessToken      string `json:"access_token"`
		TokenType        string `json:"token_type"`
		RefreshToken     string `json:"refresh_token"`
		ExpiresIn        int64  `json:"expires_in"`
		Scope            any    `json:"scope"`
		IDToken          string `json:"id_token"`
		ErrorCode        string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	jsonErr := json.Unmarshal(body, &tr)
	switch {
	case tr.ErrorCode != "":
		return pollAnswer{status: status, errorCode: text(tr.ErrorCode, 200), description: text(tr.ErrorDescription, 500)}
	case status < 200 || status > 299:
		return pollAnswer{status: status, errorCode: "http_error", description: fmt.Sprintf("the token endpoint answered HTTP %d", status)}
	case jsonErr != nil || tr.AccessToken == "":
		return pollAnswer{status: status, errorCode: "invalid_response", description: "the token endpoint's answer is not a token"}
	}
	tok := (&oauth2.Token{AccessToken: tr.AccessToken, TokenType: tr.TokenType, RefreshToken: tr.RefreshToken, ExpiresIn: tr.ExpiresIn}).
		WithExtra(map[string]any{"scope": tr.Scope, "id_token": tr.IDToken})
	return pollAnswer{status: status, token: tok}
}

// devicePoll handles a device flow the timer woke: it polls the token
// endpoint when a poll is due and records what changed. It reports false,
// doing nothing, for a flow that is not a live device flow before its
// deadline (fire handles those). The caller holds no lock.
func (e *Engine) devicePoll(lf *liveFlow, now time.Time, retry func(*liveFlow, time.Time)) bool {
	lf.mu.Lock()
	f := lf.flow
	if f.Transport != states.Device || lf.dev == nil || !f.State.Live() || !now.Before(f.Deadline) {
		lf.mu.Unlock()
		return false
	}
	d := lf.dev
	at := e.pollAt(lf)
	switch {
	case d.polling:
		// The poll under way reschedules the flow when it is answered.
		lf.mu.Unlock()
		return true
	case now.Before(at):
		lf.mu.Unlock()
		retry(lf, at)
		return true
	}
	ctx := context.Background()
	if d.secret == nil {
		plain, found, err := e.log.Secret(ctx, deviceKeyPrefix+f.ID)
		var s deviceSecret
		if err == nil && found {
			err = json.Unmarshal(plain, &s)
		}
		if err != nil {
			lf.mu.Unlock()
			e.logger.Error("could not read a device flow's sealed code; retrying in a second", "flow", states.ShortID(f.ID), "err", err)
			retry(lf, now.Add(time.Second))
			return true
		}
		if !found {
			_, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{Reason: states.ExchangeFailed, ErrorCode: "device_code_missing",
				Message: "the flow's device code is missing from the sealed store; start a new connect"}), e.dropFlowSecrets(lf))
			lf.mu.Unlock()
			if err != nil {
				retry(lf, now.Add(time.Second))
			}
			return true
		}
		d.secret = &s
	}
	p, err := e.provider(f.Provider)
	if err != nil {
		_, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{Reason: states.ExchangeFailed, ErrorCode: "unknown_provider",
			Message: fmt.Sprintf("provider %q is no longer configured", f.Provider)}), e.dropFlowSecrets(lf))
		lf.mu.Unlock()
		if err != nil {
			retry(lf, now.Add(time.Second))
		}
		return true
	}
	if lf.perStart {
		if d.secret.Client == nil {
			// Polling as the configured client would be refused: the
			// device code was issued to the flow's own client.
			_, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{Reason: states.ExchangeFailed, ErrorCode: "client_missing",
				Message: "the flow's per-start client is missing from the sealed store; start a new connect"}), e.dropFlowSecrets(lf))
			lf.mu.Unlock()
			if err != nil {
				retry(lf, now.Add(time.Second))
			}
			return true
		}
		p = p.withClient(d.secret.Client)
	}
	code, seq := d.secret.DeviceCode, f.LastSeq
	d.polling = true
	lf.mu.Unlock()

	if !e.claimPoll(ctx, f.ID) {
		// Another engine polls it, or none can say: look again at the
		// next point of the schedule, in case its poller stopped.
		lf.mu.Lock()
		defer lf.mu.Unlock()
		d.polling = false
		if lf.flow.State.Live() {
			d.pass(lf.flow, at, now, time.Time{})
			retry(lf, e.wakeFor(lf))
		}
		return true
	}
	sent := e.clock.Now()
	ans := e.pollToken(ctx, p, code)

	lf.mu.Lock()
	defer lf.mu.Unlock()
	d.polling = false
	if e.claims != nil {
		d.claimed = true
	}
	if lf.flow.LastSeq != seq || !lf.flow.State.Live() {
		// Canceled, superseded or expired while the poll was out: what it
		// heard is moot (a token so obtained is dropped, as the user asked).
		if lf.flow.State.Live() {
			retry(lf, e.wakeFor(lf))
		} else {
			e.releasePoll(lf) // it ended before this poll took the claim
		}
		return true
	}
	f = lf.flow
	var recs []states.Record
	var secrets map[string][]byte
	switch ans.errorCode {
	case "authorization_pending":
		// Nothing changed: the schedule in the log still holds.
		d.pass(f, at, now, sent)
		retry(lf, e.wakeFor(lf))
		return true
	case "slow_down", "timeout", "network_error":
		interval := f.PollInterval + slowDownStep
		next := sent.Add(interval).UTC()
		recs = e.record(lf, states.PollSlowed, states.Data{
			ErrorCode: ans.errorCode, Message: ans.description,
			DevicePolling: &states.DevicePolling{PollInterval: int(interval / time.Second), NextPoll: &next},
		})
	case "access_denied":
		recs = e.record(lf, states.Failed, states.Data{Reason: states.ProviderDenied, ErrorCode: ans.errorCode, Message: ans.description})
		secrets = e.dropFlowSecrets(lf)
	case "expired_token":
		recs = e.record(lf, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired, ErrorCode: ans.errorCode, Message: ans.description})
		secrets = e.dropFlowSecrets(lf)
	case "":
		out := e.storeToken(ctx, p, f, ans.token, "", code)
		recs = e.record(lf, out.event, out.data)
		secrets = e.dropFlowSecrets(lf)
		for k, v := range out.secrets {
			secrets[k] = v
		}
	default:
		e.logger.Warn("device poll failed", "flow", states.ShortID(f.ID), "provider", f.Provider, "http_status", ans.status, "error_code", ans.errorCode)
		recs = e.record(lf, states.Failed, states.Data{Reason: states.ExchangeFailed, HTTPStatus: ans.status, ErrorCode: ans.errorCode, Message: ans.description})
		secrets = e.dropFlowSecrets(lf)
	}
	if _, err := e.commit(ctx, lf, recs, secrets); err != nil {
		e.logger.Error("could not record a device poll's outcome; polling again in a second", "flow", states.ShortID(f.ID), "err", err)
		if lf.flow.State.Live() {
			retry(lf, now.Add(time.Second))
		}
		return true
	}
	if lf.flow.State.Live() {
		d.pollAt = lf.flow.NextPoll
		retry(lf, e.wakeFor(lf))
	} else {
		e.logger.Info("device flow ended", "flow", states.ShortID(f.ID), "provider", f.Provider, "state", lf.flow.State, "reason", lf.flow.Reason)
	}
	return true
}

// pollAt is lf's next poll time, from the recorded schedule when not yet
// known (a flow read back from the log): the first point of the schedule
// strictly after now, since a poll due at this very instant may have been
// made by the engine that stopped, and polling twice at one point of the
// schedule would poll faster than the interval. The caller holds lf.mu.
func (e *Engine) pollAt(lf *liveFlow) time.Time {
	if lf.dev.pollAt.IsZero() {
		lf.dev.pollAt = lf.flow.NextPollAfter(e.clock.Now().Add(time.Nanosecond))
	}
	return lf.dev.pollAt
}

// DeviceCode returns the user code of a live device flow and where to
// enter it, so a client that re-attaches (flowctl wait) can show it again.
// A flow that is not a live device flow gives a *FlowError wrapping
// ErrNotAwaiting.
func (e *Engine) DeviceCode(ctx context.Context, state string) (DeviceCode, error) {
	lf, err := e.hold(ctx, state)
	if err != nil {
		return DeviceCode{}, fmt.Errorf("device code of %s: %w", states.ShortID(state), err)
	}
	if lf == nil {
		f, err := e.finished(ctx, state)
		if err != nil {
			return DeviceCode{}, err
		}
		return DeviceCode{}, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	lf.mu.Lock()
	defer lf.mu.Unlock()
	f := lf.flow
	if f.Transport != states.Device || !f.State.Live() || lf.dev == nil {
		return DeviceCode{}, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	if lf.dev.secret == nil {
		plain, found, err := e.log.Secret(ctx, deviceKeyPrefix+f.ID)
		if err != nil {
			return DeviceCode{}, fmt.Errorf("device code of %s: read the sealed code: %w", states.ShortID(state), err)
		}
		if !found {
			return DeviceCode{}, fmt.Errorf("device code of %s: %w", states.ShortID(state), ErrNoDeviceCode)
		}
		var s deviceSecret
		if err := json.Unmarshal(plain, &s); err != nil {
			return DeviceCode{}, fmt.Errorf("device code of %s: read the sealed code: %w", states.ShortID(state), err)
		}
		lf.dev.secret = &s
	}
	return DeviceCode{UserCode: lf.dev.secret.UserCode, VerificationURI: f.VerificationURI,
		VerificationURIComplete: lf.dev.secret.VerificationURIComplete, NextPoll: e.pollAt(lf)}, nil
}

// ErrNoDeviceCode: a live device flow's sealed codes are gone.
var ErrNoDeviceCode = errors.New("device code missing from the sealed store")
