package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// Provider is an OAuth 2.0 authorization server flowd can connect to.
type Provider struct {
	// Name is how users and the API refer to the provider ("github").
	Name     string
	AuthURL  string
	TokenURL string
	// AuthMethod is how the client authenticates at the token endpoint,
	// for the code exchange and every refresh. ChooseAuthMethod picks it
	// from the server's metadata. Empty means AuthMethodNone without a
	// ClientSecret and AuthMethodClientSecretBasic with one. A secret-based
	// method without a secret, or none with one, is refused at Open.
	AuthMethod   AuthMethod
	ClientID     string
	ClientSecret string
	// Issuer is the authorization server's issuer identifier (RFC 8414).
	// When set, a redirect whose iss parameter names another issuer is
	// refused before its code is sent anywhere (RFC 9207 section 2.4): it
	// may come from a different server (a mix-up attack, RFC 9700 section
	// 4.4). Compared as exact strings.
	Issuer string
	// RequireIssuer: the server advertises
	// authorization_response_iss_parameter_supported, so a redirect
	// without iss is refused too. It needs Issuer.
	RequireIssuer bool
	// Scopes are requested when a Start names none. With "openid" among a
	// flow's scopes the provider is treated as an OpenID Connect provider:
	// the authorization request carries a nonce.
	Scopes []string
	// AuthParams are extra authorize-URL parameters (prompt=consent, access_type=offline, ...).
	AuthParams map[string]string
	// DeviceAuthURL is the device authorization endpoint (RFC 8628); empty
	// when the provider has none, and the device transport is refused.
	DeviceAuthURL string
	// RevocationURL is the provider's RFC 7009 token revocation endpoint
	// (revocation_endpoint in its metadata). Empty: the provider has none,
	// and Disconnect only deletes the local copy (and says so).
	RevocationURL string
	// Resource is the resource indicator (RFC 8707) sent on the
	// authorization request and on every token request (exchange and
	// refresh), binding tokens to that resource. Empty sends none.
	Resource string
}

// Clock is the engine's time source. Tests inject engine/fakeclock to step time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started, and reports whether it did.
	Stop() bool
}

// Hooks lets an embedder observe the engine (metrics, audit). Every hook is
// optional and must not block: it runs on the engine's path, Transition
// with the flow's lock held, so a hook must not call back into the engine.
type Hooks struct {
	// Transition is called after a record is durably appended, with the flow it produced.
	Transition func(rec states.Record, flow states.Flow)
	// UnknownCallback is called for a callback whose state names no flow.
	UnknownCallback func()
	// Append is called after every append with its latency and error.
	Append func(d time.Duration, err error)
	// Connection is called after a connection changed and the change was
	// recorded: connected, refreshed, a refresh failed, disconnected. It
	// runs with no flow's or token's lock held, on the goroutine of the
	// call that made the change, so it may call the engine.
	Connection func(c Connection)
}

// Config configures an Engine. Only Log is required.
type Config struct {
	// Log is the durable event log. The caller opens and closes it.
	Log Log
	// Providers are the authorization servers flows may start against at
	// first; SetProviders, AddProvider and RemoveProvider change them later.
	Providers []Provider
	// Tokens stores tokens of completed flows. Default: sealed in Log's secrets.
	Tokens TokenStore
	// Clock defaults to the system clock.
	Clock Clock
	// Rand is the source of state tokens and PKCE verifiers. Default crypto/rand.
	Rand io.Reader
	// TTL is how long a flow waits for its callback. Default 5 minutes.
	TTL time.Duration
	// LoopbackRedirectURL is the redirect URI of the loopback transport.
	// Default http://127.0.0.1:8085/oauth/callback.
	LoopbackRedirectURL string
	// PublicBaseURL is the gateway's public base URL; the gateway transport's
	// redirect URI is PublicBaseURL + "/oauth/callback". Empty disables the
	// gateway transport.
	PublicBaseURL string
	// LaunchTTL is how long a flow's one-time launch link (Started.LaunchURL)
	// may be opened. Default DefaultLaunchTTL: long enough for a browser to
	// start, short enough that a link read from a process list is stale.
	LaunchTTL time.Duration
	// ManualRedirectURL is the redirect URI of the manual transport. Default
	// LoopbackRedirectURL: the browser lands on a page that may not load, and
	// the user pastes its URL.
	ManualRedirectURL string
	// HTTPClient calls token endpoints. Default: a client with ExchangeTimeout.
	HTTPClient *http.Client
	// ExchangeTimeout bounds one token exchange or refresh. Default 30 seconds.
	ExchangeTimeout time.Duration
	// Retention is how long the records of finished flows are kept. Default
	// 7 days; negative keeps them for ever.
	Retention time.Duration
	// Logger receives structured logs; it never sees a secret. Default: discard.
	Logger *slog.Logger
	// Hooks observe the engine.
	Hooks Hooks
	// Identify, when set, is called after every successful exchange and
	// before it is recorded, to establish who signed in (verify the ID
	// token, ask a userinfo endpoint). The engine itself verifies nothing:
	// it sends a nonce to providers whose scopes include openid and hands
	// it here. Nil stores tokens under the account the flow was started for.
	Identify IdentifyFunc
	// MCP configures connects by MCP server URL.
	MCP MCPConfig
}

// StartRequest asks for a new flow.
type StartRequest struct {
	// Provider names a configured provider. Empty when Resource is set.
	Provider string
	// Resource is an MCP server URL to connect to instead of a configured
	// provider: flowd discovers its authorization server, registers a
	// client there (or reuses one) and binds the token to the resource.
	// Its flows and token are named by the URL, canonical.
	Resource string
	// Challenge is the WWW-Authenticate header the resource answered the
	// caller with (a 401, or a 403 insufficient_scope to step up); empty
	// makes flowd probe the resource itself.
	Challenge string
	// Scopes to request; empty means the provider's default scopes.
	Scopes []string
	// Transport says how the callback comes back. Default loopback.
	Transport states.Transport
	// Account names the account at the provider to connect; a new Start
	// for the same provider and account supersedes a live earlier one.
	// Empty means whichever account the user signs in with. With
	// Config.Identify, the token is stored under the account the provider
	// identifies, and a flow whose user signs in as another account than
	// a non-empty Account ends error(account_mismatch); without it, the
	// token is stored under Account as given (a label of the embedder's).
	Account string
	// TTL overrides Config.TTL for this flow when positive.
	TTL time.Duration
	// Launch asks for a one-time launch link (Started.LaunchURL): open it
	// in the user's browser instead of AuthURL, so no process list shows
	// the authorization URL and the flow is bound to that browser; a
	// loopback callback from anyone else on the machine changes nothing.
	// The link is served on the loopback listener whatever the transport.
	Launch bool
	// Client, when set, is the OAuth client this connect uses instead of
	// the provider's configured ClientID, ClientSecret and AuthMethod: for
	// the authorization request, the code exchange (or the device
	// transport's authorization and polls), and every refresh and the
	// revocation of the connection it makes. Its secret is sealed, never
	// recorded. An invalid client, or one given with Resource, is refused
	// with an error wrapping ErrBadClient, and nothing is recorded. Nil
	// uses the provider's configured client, as before.
	Client *Client
}

// Started is what Start returns: everything needed to send the user off.
type Started struct {
	// ID is the flow's id (Flow.ID), sent as the OAuth state parameter:
	// the handle Status, Wait and Cancel take.
	ID          string
	AuthURL     string
	RedirectURI string
	Deadline    time.Time
	// Superseded lists the earlier live flows this one ended.
	Superseded []string
	// Device is the user code and where to enter it, for the device
	// transport (AuthURL and RedirectURI are empty then); nil otherwise.
	Device *DeviceCode
	// PollInterval is how often the engine polls the token endpoint of a
	// device flow, at the start; slow_down makes it longer.
	PollInterval time.Duration
	// Scopes are the scopes asked for: those requested, joined by those
	// the account's stored token was already granted (a step-up never
	// asks for fewer than the connection holds).
	Scopes []string
	// LaunchURL is the flow's one-time launch link on the loopback
	// listener, when StartRequest.Launch asked for one: an opaque value,
	// not the state, that may be passed to a browser opener's command line
	// (which every local user can read). It is useless once opened and
	// after Config.LaunchTTL. Serve it with Engine.Launch (package
	// engine/redirect does).
	LaunchURL string
}

// Identity is who signed in at the provider, as Config.Identify
// established it.
type Identity struct {
	// Account names the account: the token is stored under it (GitHub: the
	// login; OpenID Connect: the email, else the subject). Empty leaves
	// the account the flow was started for.
	Account string
	// Subject is the provider's stable id of the user (the ID token's
	// sub; GitHub: the numeric user id).
	Subject string
	// Email is the user's email address, when the provider gave one.
	Email string
}

// IdentifyFunc establishes who signed in once a code was exchanged for
// tok (whose Extra("id_token") holds an OpenID Connect ID token). nonce is
// the nonce the flow sent in its authorization request ("" when it sent
// none); an ID token must carry it. An error ends the flow
// error(identity_invalid) and the token is not stored; the error's text
// is recorded, with any token or the nonce redacted from it.
type IdentifyFunc func(ctx context.Context, p Provider, tok *oauth2.Token, nonce string) (Identity, error)

// Launched is what opening a launch link gives the browser: the binding
// cookie's value and the provider's authorization URL to go on to.
type Launched struct {
	// State is the flow's id; the binding cookie is named after it.
	State string
	// AuthURL is the provider's authorization URL.
	AuthURL string
	// Binding is the secret the browser keeps as the flow's binding
	// cookie. Only its keyed fingerprint is recorded (browser_bound).
	Binding  string
	Deadline time.Time
}

// CallbackParams are the query parameters of the provider's redirect, and
// what the channel it came by vouches for.
type CallbackParams struct {
	State            string
	Code             string
	Error            string
	ErrorDescription string
	// Issuer is the redirect's iss parameter (RFC 9207), "" when it had none.
	Issuer string
	// Binding is the value of the flow's binding cookie the browser sent
	// with the redirect ("" when none). A flow bound to a browser
	// (browser_bound) refuses a callback without the right one, unless
	// Authenticated.
	Binding string
	// Authenticated says the callback came by a channel that authenticates
	// its sender on its own: flowd's unix socket by the peer's uid (a
	// pasted callback), the gateway relay by its service token. Such a
	// callback is not checked against the browser binding. Leave it false
	// for anything any local user can reach, like a loopback listener.
	Authenticated bool
}

// Filter selects flows for List. Zero fields match everything.
type Filter struct {
	States   []states.State
	Provider string
}

// Errors a caller can act on. Each is returned wrapped; test with errors.Is.
var (
	// ErrUnknownProvider: the named provider is not configured. The error is
	// an *UnknownProviderError listing the known ones.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrUnknownState: no flow has this state token (never started, mistyped, or pruned).
	ErrUnknownState = errors.New("unknown state")
	// ErrNotAwaiting: the flow is not awaiting a callback: it has finished,
	// or its code is being exchanged. A repeated callback gets this.
	ErrNotAwaiting = errors.New("flow is not awaiting a callback")
	// ErrExpired: the flow's deadline passed.
	ErrExpired = errors.New("flow expired")
	// ErrExchangeInProgress: the flow's code is being exchanged and cannot be canceled now.
	ErrExchangeInProgress = errors.New("exchange in progress")
	// ErrNoGateway: the gateway transport needs Config.PublicBaseURL.
	ErrNoGateway = errors.New("gateway transport needs a public base URL")
	// ErrBadTransport: the transport is not loopback, gateway, manual or device.
	ErrBadTransport = errors.New("unknown transport")
	// ErrNoToken: no token is stored for the provider; connect first.
	ErrNoToken = errors.New("no token stored")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine closed")
	// ErrBindingMissing: the flow is bound to the browser that opened its
	// launch link and the callback carried no binding. Returned in a
	// *FlowError; the flow is unchanged and still awaits its callback.
	ErrBindingMissing = errors.New("callback without the flow's browser binding")
	// ErrBindingMismatch: the callback carried a binding that is not the
	// flow's. Returned in a *FlowError; the flow is unchanged.
	ErrBindingMismatch = errors.New("callback with another flow's or a forged browser binding")
	// ErrLaunchUnknown: no launch link has this value, or it expired.
	ErrLaunchUnknown = errors.New("unknown or expired launch link")
	// ErrLaunchUsed: the launch link was already opened once. Nothing
	// changes: the browser that opened it first keeps the binding.
	ErrLaunchUsed = errors.New("launch link already used")
)

// UnknownProviderError is returned for a provider name that is not configured.
type UnknownProviderError struct {
	Name  string
	Known []string
}

func (e *UnknownProviderError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("unknown provider %q: no providers are configured; add one to the config file", e.Name)
	}
	return fmt.Sprintf("unknown provider %q; known providers: %s", e.Name, strings.Join(e.Known, ", "))
}

// Is makes errors.Is(err, ErrUnknownProvider) true.
func (e *UnknownProviderError) Is(target error) bool { return target == ErrUnknownProvider }

// FlowError is returned by Callback and Cancel when the flow exists but
// cannot take the request. Flow is the flow as it stands; Err is
// ErrNotAwaiting, ErrExpired, ErrExchangeInProgress, ErrBindingMissing or
// ErrBindingMismatch.
type FlowError struct {
	Flow states.Flow
	Err  error
}

func (e *FlowError) Error() string {
	msg := fmt.Sprintf("flow %s: %v (state %s", states.ShortID(e.Flow.ID), e.Err, e.Flow.State)
	if e.Flow.Reason != "" {
		msg += ": " + string(e.Flow.Reason)
	}
	return msg + ")"
}

func (e *FlowError) Unwrap() error { return e.Err }
