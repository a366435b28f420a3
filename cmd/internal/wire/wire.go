// Package wire is the contract between flowd and its clients: the JSON
// bodies of every /v1 route, the one error shape with its stable codes, and
// the route list itself as data.
//
// flowd builds its router from Routes and flowctl builds its URLs from them,
// so the two cannot drift; docs/api.yaml is kept in step by a test.
//
// All JSON names are snake_case. Times are RFC 3339 in UTC. Durations are Go
// duration strings ("90s", "5m"). No body ever carries an authorization
// code back out, a PKCE verifier, a client secret or a refresh token; the
// only secret a response carries is the access token of GET
// /v1/providers/{provider}/token, which only the local user may call.
package wire

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flowdhq/flowd/states"
)

// Route is one endpoint of flowd's HTTP API.
type Route struct {
	// Name identifies the route in the policy table, metrics and docs
	// (operationId in docs/api.yaml).
	Name string
	// Method is the HTTP method.
	Method string
	// Pattern is the net/http ServeMux path pattern; "{name}" is a wildcard
	// matching one path segment.
	Pattern string
	// Summary says in one line what the route does.
	Summary string
}

// Route names.
const (
	RouteStart      = "start"
	RouteList       = "list"
	RouteStatus     = "status"
	RouteCancel     = "cancel"
	RouteHistory    = "history"
	RouteCallback   = "relay_callback"
	RouteProviders  = "providers"
	RouteToken      = "token"
	RouteDisconnect = "disconnect"
	// RouteConnections lists what the user holds after connecting.
	RouteConnections = "connections"
	RouteHealth      = "health"
	RouteMetrics     = "metrics"
	// RouteBrowserCallback is the provider's redirect, opened by the browser.
	RouteBrowserCallback = "browser_callback"
	// RouteLaunch is a flow's one-time launch link, opened by the browser:
	// it sets the flow's binding cookie and redirects to the provider.
	RouteLaunch = "browser_launch"
	// RoutePreflight answers CORS and Private Network Access preflights for
	// the redirect without touching any flow.
	RoutePreflight = "browser_callback_preflight"
	// RouteExport streams the event log as JSON lines.
	RouteExport = "export"
	// RouteReload re-reads the config file and applies it without a restart.
	RouteReload = "reload"
)

// Routes is every route flowd serves, on either listener. Which principal
// may call which route is flowd's policy table, not part of the wire.
var Routes = []Route{
	{RouteStart, "POST", "/v1/flows", "Start a connect flow (StartRequest -> StartResponse)."},
	{RouteList, "GET", "/v1/flows", "List flows; query: status (repeatable or comma-separated), provider (-> ListResponse)."},
	{RouteStatus, "GET", "/v1/flows/{state}", "A flow as it stands; query wait=<duration> long-polls until it is terminal (-> Flow)."},
	{RouteCancel, "POST", "/v1/flows/{state}/cancel", "Cancel a live flow (-> Flow)."},
	{RouteHistory, "GET", "/v1/flows/{state}/history", "A flow's event records (-> HistoryResponse)."},
	{RouteExport, "GET", "/v1/log", "The event log in global order as JSON lines (application/x-ndjson); query: flow=<state>, since=<RFC 3339 time>. With since, every flow touched since then is exported whole, so the export replays."},
	{RouteCallback, "POST", "/v1/callbacks", "Deliver a relayed or pasted callback (CallbackRequest -> CallbackResponse)."},
	{RouteProviders, "GET", "/v1/providers", "The configured providers (-> ProvidersResponse)."},
	{RouteToken, "GET", "/v1/providers/{provider}/token", "A valid access token, refreshed when needed (-> TokenResponse)."},
	{RouteDisconnect, "DELETE", "/v1/providers/{provider}/token", "Revoke the provider's stored token at the provider (RFC 7009) when it can, and remove it (-> DisconnectResponse)."},
	{RouteConnections, "GET", "/v1/connections", "Every connection, or one provider's with ?provider= (-> ConnectionsResponse)."},
	{RouteReload, "POST", "/v1/reload", "Re-read the config file and apply its providers without a restart; an invalid file changes nothing (-> ReloadResponse)."},
	{RouteHealth, "GET", "/v1/health", "Liveness and basic facts about the daemon (-> HealthResponse)."},
	{RouteMetrics, "GET", "/metrics", "Prometheus metrics (text exposition format)."},
	{RouteBrowserCallback, "GET", "/oauth/callback", "The provider's redirect; answers an HTML page that tells the outcome."},
	{RouteLaunch, "GET", "/oauth/launch", "A flow's one-time launch link (query t=<value>): sets the flow's binding cookie and redirects (303) to the provider's authorization URL."},
	{RoutePreflight, "OPTIONS", "/oauth/callback", "CORS / Private Network Access preflight; touches no flow."},
}

// RouteByName returns the route called name; ok is false if there is none.
func RouteByName(name string) (r Route, ok bool) {
	for _, r := range Routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}

// Path fills the route's wildcards, in order, with vals (path-escaped).
// Missing values leave the wildcard text in place, which the server rejects.
func (r Route) Path(vals ...string) string {
	p := r.Pattern
	for _, v := range vals {
		i := strings.IndexByte(p, '{')
		j := strings.IndexByte(p, '}')
		if i < 0 || j < i {
			break
		}
		p = p[:i] + url.PathEscape(v) + p[j+1:]
	}
	return p
}

// Size limits flowd enforces. A request over a limit is refused with code
// too_large before it reaches any flow: status 413 for a body, 414 for a
// query string, 400 for a single value (state, code, ...).
const (
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 64 << 10
	// MaxStateLen bounds a state token. Tokens flowd issues are far shorter.
	MaxStateLen = 256
	// MaxCodeLen bounds an authorization code.
	MaxCodeLen = 4096
	// MaxErrorDescriptionLen bounds a provider's error_description.
	MaxErrorDescriptionLen = 2048
	// MaxIssuerLen bounds a redirect's iss; issuer identifiers are URLs.
	MaxIssuerLen = 2048
	// MaxQueryBytes bounds the raw query string of any request.
	MaxQueryBytes = 8 << 10
	// MaxWait caps ?wait= on GET /v1/flows/{state}; longer waits are cut to
	// it and the client polls again.
	MaxWait = 5 * time.Minute
)

// Error is the body of every non-2xx response: {"error": {...}}.
type Error struct {
	Err ErrorBody `json:"error"`
}

// ErrorBody says what went wrong, as a stable code and a sentence that says
// what to do next.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Err.Code + ": " + e.Err.Message }

// Stable error codes. Clients switch on these, never on messages.
const (
	// CodeBadRequest (400): malformed JSON, a bad parameter or value.
	CodeBadRequest = "bad_request"
	// CodeTooLarge (413): the body or a query value exceeds its limit.
	CodeTooLarge = "too_large"
	// CodeUnauthorized (401): a bearer token was required, absent or wrong.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (403): the caller may not use this route.
	CodeForbidden = "forbidden"
	// CodeNotFound (404): no such route.
	CodeNotFound = "not_found"
	// CodeMethodNotAllowed (405): the route exists with other methods.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnknownProvider (404): the provider is not configured; the message lists the known ones.
	CodeUnknownProvider = "unknown_provider"
	// CodeUnknownState (404): no flow has this state (mistyped, never started, or pruned).
	CodeUnknownState = "unknown_state"
	// CodeFlowFinished (404): the flow has already ended; start a new connect.
	CodeFlowFinished = "flow_finished"
	// CodeFlowExpired (404): the flow's deadline passed; start a new connect.
	CodeFlowExpired = "flow_expired"
	// CodeExchangeInProgress (409): the flow's code is being exchanged right now.
	CodeExchangeInProgress = "exchange_in_progress"
	// CodeNotBound (403): the flow is bound to the browser that opened its
	// launch link, and the callback did not come from it; nothing changed.
	CodeNotBound = "not_browser_bound"
	// CodeGatewayNotConfigured (400): the gateway transport needs public_base_url in the config.
	CodeGatewayNotConfigured = "gateway_not_configured"
	// CodeUnknownTransport (400): transport is not loopback, gateway, manual or device.
	CodeUnknownTransport = "unknown_transport"
	// CodeDeviceNotSupported (400): the provider has no device authorization
	// endpoint; use another transport, or set device_auth_url in the config.
	CodeDeviceNotSupported = "device_not_supported"
	// CodeDeviceAuthorizationFailed (502): the provider's device
	// authorization endpoint refused the request; nothing was recorded.
	CodeDeviceAuthorizationFailed = "device_authorization_failed"
	// CodeNotConnected (404): no token is stored for the provider; connect
	// first. Also: the connection was made with a per-start client whose
	// sealed copy is gone; connect again.
	CodeNotConnected = "not_connected"
	// CodeBadClient (400): the start request's own client (client_id,
	// client_secret, token_auth) is incomplete or inconsistent, or was
	// given for an MCP server URL; nothing was recorded.
	CodeBadClient = "bad_client"
	// CodeAccountRequired (409): the provider has several connected
	// accounts and the request named none; the message lists them.
	CodeAccountRequired = "account_required"
	// CodeMCPRefused (502): connecting to an MCP server by URL was refused
	// as unsafe: its metadata names another resource or issuer, or its
	// authorization server does not support PKCE with S256.
	CodeMCPRefused = "mcp_refused"
	// CodeMCPDiscovery (502): the MCP server's authorization could not be
	// discovered, or no client could be registered there.
	CodeMCPDiscovery = "mcp_discovery_failed"
	// CodeStepUpFutile (409): a step-up would ask for no scope the stored
	// token lacks.
	CodeStepUpFutile = "step_up_futile"
	// CodeProviderError (502): the provider refused or failed a token refresh.
	CodeProviderError = "provider_error"
	// CodeProviderUnavailable (503): the provider is configured but its
	// OIDC issuer has not answered discovery yet; flowd keeps retrying and
	// adds it without a restart. The message names the issuer and the last error.
	CodeProviderUnavailable = "provider_unavailable"
	// CodeUnavailable (503): flowd is shutting down, or its store (etcd in
	// cluster mode) has no quorum; retry later.
	CodeUnavailable = "unavailable"
	// CodeStorageFull (507): the disk holding flowd's database is full;
	// nothing was changed. Free space and retry.
	CodeStorageFull = "storage_full"
	// CodeInvalidConfig (422): a reload found the config file invalid (the
	// message names the file, the field and the reason); nothing changed.
	CodeInvalidConfig = "invalid_config"
	// CodeInternal (500): a bug or a storage failure; the daemon log has details.
	CodeInternal = "internal"
)

// StartRequest is the body of POST /v1/flows.
type StartRequest struct {
	// Provider names a configured provider, or is an MCP server URL
	// (https://...) to connect to by discovery (required).
	Provider string `json:"provider"`
	// Scopes to request; empty means the provider's default scopes.
	Scopes []string `json:"scopes,omitempty"`
	// Challenge is, for an MCP server URL, the WWW-Authenticate header the
	// server answered with (a 401, or a 403 insufficient_scope to step
	// up); empty makes flowd probe the server.
	Challenge string `json:"challenge,omitempty"`
	// Transport is loopback (default), gateway, manual or device.
	Transport string `json:"transport,omitempty"`
	// TTL overrides the configured flow lifetime, as a Go duration ("10m").
	TTL string `json:"ttl,omitempty"`
	// Account names the account at the provider to connect (a step-up or
	// reconnect of it); a new flow for the same provider and account
	// supersedes a live earlier one. Empty: whichever account the user
	// signs in with, named by the provider (GitHub login, OpenID Connect
	// email). A user who signs in as another account than a named one
	// ends the flow error(account_mismatch).
	Account string `json:"account,omitempty"`
	// ClientID, ClientSecret and TokenAuth bring the caller's own OAuth
	// client for this connect, instead of the provider's configured
	// client_id, client_secret and token auth method: the authorization
	// request, the code exchange, and every refresh and the revocation of
	// the connection it makes use it. ClientID is required when either of
	// the others is set. TokenAuth is none, client_secret_basic or
	// client_secret_post; empty means none without a secret and
	// client_secret_basic with one. The secret is sealed, never recorded,
	// logged or echoed. Not for an MCP server URL.
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	TokenAuth    string `json:"token_auth,omitempty"`
}

// StartResponse is what POST /v1/flows returns (201): everything needed to
// send the user to the provider.
type StartResponse struct {
	State       string    `json:"state"`
	Provider    string    `json:"provider"`
	Transport   string    `json:"transport"`
	AuthURL     string    `json:"auth_url"`
	RedirectURI string    `json:"redirect_uri"`
	ExpiresAt   time.Time `json:"expires_at"`
	// Superseded lists earlier live flows this one ended.
	Superseded []string `json:"superseded,omitempty"`
	// The device transport (auth_url and redirect_uri are empty then): the
	// code the user enters at verification_uri, the same with the code
	// filled in when the provider gives one, and the poll interval in
	// seconds at the start.
	UserCode                string `json:"user_code,omitempty"`
	VerificationURI         string `json:"verification_uri,omitempty"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	PollInterval            int    `json:"poll_interval,omitempty"`
	// Scopes are the scopes asked for: those requested plus those the
	// account's connection was already granted (a step-up).
	Scopes []string `json:"scopes,omitempty"`
	// LaunchURL is the loopback flow's one-time launch link: open it in a
	// browser on this machine instead of AuthURL, and the flow is bound to
	// that browser. It reveals nothing of the flow, works once and for
	// seconds. AuthURL opened by hand leaves the flow unbound.
	LaunchURL string `json:"launch_url,omitempty"`
}

// Flow is a flow as it stands: the body of GET /v1/flows/{state}, of cancel,
// and an element of ListResponse.
type Flow struct {
	// State is the flow's id and its OAuth state parameter.
	State string `json:"state"`
	// Status is pending, awaiting_callback, complete, error or expired.
	Status string `json:"status"`
	// Terminal is true once Status is complete, error or expired.
	Terminal bool `json:"terminal"`
	// Reason says why a terminal flow ended (exchanged, provider_denied, ...).
	Reason string `json:"reason,omitempty"`
	// ReasonText is Reason as a sentence for people.
	ReasonText string `json:"reason_text,omitempty"`
	// Exchanging is true while the code is being exchanged.
	Exchanging bool   `json:"exchanging,omitempty"`
	Provider   string `json:"provider"`
	// Account is the account asked for, and once complete the account the
	// token is stored under.
	Account string `json:"account,omitempty"`
	// Subject and Email identify who signed in (a verified ID token, or
	// the provider's userinfo), once complete.
	Subject     string   `json:"subject,omitempty"`
	Email       string   `json:"email,omitempty"`
	Scopes      []string `json:"scopes,omitempty"`
	Transport   string   `json:"transport"`
	RedirectURI string   `json:"redirect_uri,omitempty"`
	// Issuer is the issuer the redirect's iss must name; IssuerRequired
	// says a redirect without iss is refused (RFC 9207).
	Issuer         string     `json:"issuer,omitempty"`
	IssuerRequired bool       `json:"issuer_required,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      time.Time  `json:"expires_at"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	GrantedScopes  []string   `json:"granted_scopes,omitempty"`
	TokenStored    bool       `json:"token_stored,omitempty"`
	// Message is the provider's own text (error_description) or a short detail.
	Message string `json:"message,omitempty"`
	// ErrorCode is the provider's error code.
	ErrorCode string `json:"error_code,omitempty"`
	// HTTPStatus is the token endpoint's status when an exchange failed.
	HTTPStatus   int    `json:"http_status,omitempty"`
	SupersededBy string `json:"superseded_by,omitempty"`
	// IgnoredCallbacks counts late or repeated callbacks that changed nothing.
	IgnoredCallbacks int `json:"ignored_callbacks,omitempty"`
	// Device flows: where to enter the code and the poll interval in
	// seconds. NextPoll, UserCode and VerificationURIComplete are filled
	// for a live device flow by GET /v1/flows/{state}, so a client that
	// re-attaches can show the code again.
	VerificationURI         string     `json:"verification_uri,omitempty"`
	PollInterval            int        `json:"poll_interval,omitempty"`
	NextPoll                *time.Time `json:"next_poll,omitempty"`
	UserCode                string     `json:"user_code,omitempty"`
	VerificationURIComplete string     `json:"verification_uri_complete,omitempty"`
	// BrowserBound is true once the flow's launch link was opened: only the
	// browser that opened it may deliver its loopback callback.
	BrowserBound bool `json:"browser_bound,omitempty"`
	// Connection is how the connection a complete flow produced stands,
	// from its token events alone: healthy, refresh_failing,
	// needs_reconnect, refreshing or disconnected. Empty for flows that
	// stored no token. (flowctl status judges expiry with the clock too.)
	Connection string `json:"connection,omitempty"`
}

// FlowFrom converts the engine's view of a flow to its wire form.
func FlowFrom(f states.Flow) Flow {
	w := Flow{
		State:            f.ID,
		Status:           string(f.State),
		Terminal:         f.State.Terminal(),
		Reason:           string(f.Reason),
		Exchanging:       f.Exchanging,
		Provider:         f.Provider,
		Account:          f.Account,
		Subject:          f.Subject,
		Email:            f.Email,
		Scopes:           f.Scopes,
		Transport:        string(f.Transport),
		RedirectURI:      f.RedirectURI,
		Issuer:           f.Issuer,
		IssuerRequired:   f.IssuerRequired,
		CreatedAt:        f.Created.UTC(),
		ExpiresAt:        f.Deadline.UTC(),
		GrantedScopes:    f.GrantedScopes,
		TokenStored:      f.TokenStored,
		Message:          f.Message,
		ErrorCode:        f.ErrorCode,
		HTTPStatus:       f.HTTPStatus,
		SupersededBy:     f.SupersededBy,
		IgnoredCallbacks: f.IgnoredCallbacks,
		BrowserBound:     f.Bound(),
	}
	if f.Reason != "" {
		w.ReasonText = f.Reason.Describe()
	}
	if f.Transport == states.Device {
		w.VerificationURI = f.VerificationURI
		w.PollInterval = int(f.PollInterval / time.Second)
	}
	if c := f.Conn; c != nil {
		switch {
		case !c.Active():
			w.Connection = "disconnected"
		case c.Refreshing:
			w.Connection = "refreshing"
		default:
			w.Connection = string(c.HealthAt(time.Time{}))
		}
	}
	if !f.Ended.IsZero() {
		t := f.Ended.UTC()
		w.EndedAt = &t
	}
	return w
}

// ListResponse is the body of GET /v1/flows, newest first.
type ListResponse struct {
	Flows []Flow `json:"flows"`
}

// HistoryResponse is the body of GET /v1/flows/{state}/history. Records are
// in the event log's export format (docs/record-format.md) and carry no secrets.
type HistoryResponse struct {
	State   string          `json:"state"`
	Records []states.Record `json:"records"`
}

// CallbackRequest is the body of POST /v1/callbacks: a callback relayed by
// a gateway, or pasted by a user (manual transport). Either URL, the full
// redirect URL the browser ended on, or the separate fields are given.
type CallbackRequest struct {
	URL              string `json:"url,omitempty"`
	State            string `json:"state,omitempty"`
	Code             string `json:"code,omitempty"`
	Error            string `json:"error,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
	// Iss is the redirect's iss parameter (RFC 9207), which flowd checks
	// against the provider's issuer; a relay must pass it on.
	Iss string `json:"iss,omitempty"`
}

// Outcome is what a delivered callback did, as the callback page tells it.
type Outcome string

// Outcomes of a callback. A callback that reached no live flow is an error
// response instead (unknown_state, flow_finished, flow_expired, ...).
const (
	// OutcomeConnected: the code was exchanged and the token stored.
	OutcomeConnected Outcome = "connected"
	// OutcomeDenied: the provider redirected with an error (the user said no).
	OutcomeDenied Outcome = "denied"
	// OutcomeFailed: the callback was accepted but the flow ended in error
	// (the exchange failed, or the callback was malformed).
	OutcomeFailed Outcome = "failed"
)

// CallbackResponse is what POST /v1/callbacks returns: the outcome, a
// sentence a gateway can show the browser, and the flow.
type CallbackResponse struct {
	Outcome Outcome `json:"outcome"`
	Message string  `json:"message"`
	Flow    Flow    `json:"flow"`
}

// Provider describes a configured provider. It never carries the client secret.
type Provider struct {
	Name     string   `json:"name"`
	Preset   string   `json:"preset,omitempty"`
	AuthURL  string   `json:"auth_url"`
	TokenURL string   `json:"token_url"`
	Issuer   string   `json:"issuer,omitempty"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes,omitempty"`
	// AuthMethod is the token endpoint auth method: none,
	// client_secret_basic or client_secret_post.
	AuthMethod string `json:"token_endpoint_auth_method"`
	// AuthMethodFrom says where it came from: setting, preset, discovery or default.
	AuthMethodFrom string `json:"token_endpoint_auth_method_from,omitempty"`
	// IssuerRequired: redirects must carry iss equal to Issuer (RFC 9207).
	IssuerRequired bool `json:"issuer_required,omitempty"`
	// DeviceAuthURL is the device authorization endpoint; empty when the
	// provider does not offer the device transport.
	DeviceAuthURL string `json:"device_auth_url,omitempty"`
	// Status is ProviderAvailable, or ProviderUnavailable while its OIDC
	// issuer has not answered discovery (flowd retries in the background).
	Status string `json:"status,omitempty"`
	// Unavailable says why, when Status is ProviderUnavailable.
	Unavailable *Unavailability `json:"unavailable,omitempty"`
	// MCP is set for an MCP server connected by URL (Name is the URL):
	// the authorization server discovery chose and the client used there.
	MCP *MCPConnection `json:"mcp,omitempty"`
}

// Provider statuses.
const (
	ProviderAvailable   = "available"
	ProviderUnavailable = "unavailable"
)

// Unavailability is why a provider cannot be used yet.
type Unavailability struct {
	// Reason is the last discovery error: where, and what went wrong.
	Reason string `json:"reason"`
	// Since is when discovery first failed.
	Since time.Time `json:"since"`
	// Attempts counts the discovery attempts so far.
	Attempts int `json:"attempts"`
	// NextAttempt is when flowd tries again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// MCPConnection is what flowd keeps about an MCP server connected by URL.
type MCPConnection struct {
	// Resource is the resource indicator (RFC 8707) tokens are bound to.
	Resource     string `json:"resource"`
	AuthServer   string `json:"auth_server"`
	Registration string `json:"registration"`
	TokenAuth    string `json:"token_auth"`
}

// ProvidersResponse is the body of GET /v1/providers, sorted by name.
type ProvidersResponse struct {
	Providers []Provider `json:"providers"`
	// ConfigFile is the config file flowd reads its providers from, or
	// looked for (see ConfigFileFound).
	ConfigFile string `json:"config_file,omitempty"`
	// ConfigFileFound is false when flowd found no file at ConfigFile and
	// runs on its defaults.
	ConfigFileFound bool `json:"config_file_found"`
}

// ReloadResponse is the body of POST /v1/reload: the config now in force.
type ReloadResponse struct {
	// ConfigFile is the file read (or looked for), as in ProvidersResponse.
	ConfigFile      string `json:"config_file"`
	ConfigFileFound bool   `json:"config_file_found"`
	// Providers are the names configured now, sorted.
	Providers []string `json:"providers"`
	// Added, Removed and Changed compare with the config before.
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"`
	// Unavailable are providers whose OIDC issuer did not answer: flowd
	// runs without them and keeps retrying, as at start-up.
	Unavailable []string `json:"unavailable,omitempty"`
	// RestartNeeded lists settings that changed in the file but apply
	// only when flowd starts (listen, socket, state_dir, ...).
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

// TokenResponse is the body of GET /v1/providers/{provider}/token. It never
// carries the refresh token.
type TokenResponse struct {
	Provider string `json:"provider"`
	// Account is the account the token belongs to ("" when it is stored
	// under no account name).
	Account     string    `json:"account,omitempty"`
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type,omitempty"`
	Expiry      time.Time `json:"expiry,omitzero"`
	Scopes      []string  `json:"scopes,omitempty"`
	// Flow is the state of the flow that obtained the token.
	Flow       string    `json:"flow,omitempty"`
	ObtainedAt time.Time `json:"obtained_at,omitzero"`
}

// DisconnectResponse is the body of DELETE /v1/providers/{provider}/token.
type DisconnectResponse struct {
	Provider string `json:"provider"`
	Account  string `json:"account,omitempty"`
	// Removed is false when no token was stored: disconnecting twice is not an error.
	Removed bool `json:"removed"`
	// Revocation is what the provider was told: revoked, unsupported (it
	// has no revocation endpoint; its tokens stay valid there until they
	// expire) or failed (RevocationError says how). Empty when nothing was removed.
	Revocation      string `json:"revocation,omitempty"`
	RevocationError string `json:"revocation_error,omitempty"`
}

// ConnectionsResponse is the body of GET /v1/connections.
type ConnectionsResponse struct {
	Connections []Connection `json:"connections"`
}

// Connection is one connection: a stored token and how it stands. It
// never carries a token.
type Connection struct {
	Provider string `json:"provider"`
	// Account is the account the token is stored under; empty for the token stored under no account name.
	Account string `json:"account,omitempty"`
	// Flow is the state of the flow that connected (flowctl inspect it).
	Flow string `json:"flow"`
	// ClientID and Registration name the client the token is refreshed
	// with when it is not the provider's configured one: registration is
	// per_start (the caller's own app) or how an MCP server's client was
	// registered. Absent for the configured client.
	ClientID     string    `json:"client_id,omitempty"`
	Registration string    `json:"registration,omitempty"`
	ConnectedAt  time.Time `json:"connected_at"`
	Scopes       []string  `json:"scopes,omitempty"`
	// ExpiresAt is when the access token expires; absent when it does not.
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
	HasRefreshToken bool       `json:"has_refresh_token"`
	// Health is healthy, refresh_failing or needs_reconnect.
	Health        string     `json:"health"`
	LastRefreshAt *time.Time `json:"last_refresh_at,omitempty"`
	Refreshes     int        `json:"refreshes,omitempty"`
	Rotations     int        `json:"rotations,omitempty"`
	// The last failed refresh, when Health is not healthy because of one.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	ErrorCode    string     `json:"error_code,omitempty"`
	Message      string     `json:"message,omitempty"`
	HTTPStatus   int        `json:"http_status,omitempty"`
	Transient    bool       `json:"transient,omitempty"`
}

// HealthResponse is the body of GET /v1/health.
type HealthResponse struct {
	// Status is "ok".
	Status  string `json:"status"`
	Version string `json:"version"`
	// StartedAt is when this flowd started.
	StartedAt time.Time `json:"started_at"`
	// Listen is the loopback listener's address (host:port).
	Listen string `json:"listen"`
	// LoopbackRedirectURI is the redirect URI to register at providers.
	LoopbackRedirectURI string `json:"loopback_redirect_uri"`
	// GatewayRedirectURI is set when public_base_url is configured.
	GatewayRedirectURI string `json:"gateway_redirect_uri,omitempty"`
	Providers          int    `json:"providers"`
}

// SocketEnv names the environment variable that overrides the socket path
// for both flowd and flowctl.
const SocketEnv = "FLOWD_SOCKET"

// StateDirEnv names the environment variable that sets flowd's state
// directory; flowctl reads it too, to find a socket kept there.
const StateDirEnv = "FLOWD_STATE_DIR"

// DefaultSocketPath is where flowd listens and flowctl connects when no
// flag or FLOWD_SOCKET says otherwise: $XDG_RUNTIME_DIR/flowd.sock, else
// flowd.sock in the state directory ($FLOWD_STATE_DIR, else
// DefaultStateDir).
func DefaultSocketPath() string {
	if p := os.Getenv(SocketEnv); p != "" {
		return p
	}
	dir := os.Getenv(StateDirEnv)
	if dir == "" {
		dir = DefaultStateDir()
	}
	return SocketPathIn(dir)
}

// SocketPathIn is the default socket of a flowd whose state directory is
// stateDir: $XDG_RUNTIME_DIR/flowd.sock, else flowd.sock in stateDir.
func SocketPathIn(stateDir string) string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "flowd.sock")
	}
	return filepath.Join(stateDir, "flowd.sock")
}

// DefaultStateDir is $XDG_STATE_HOME/flowd, else ~/.local/state/flowd. It
// returns a relative ".flowd" only when no home directory is known.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "flowd")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ".flowd"
	}
	return filepath.Join(home, ".local", "state", "flowd")
}
