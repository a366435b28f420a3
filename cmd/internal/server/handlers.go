package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
	"github.com/flowdhq/flowd/states"
)

// Bounds on start requests, beyond the body size.
const (
	maxScopes      = 64
	maxScopeLen    = 256
	maxNameLen     = 128
	maxAccount     = 256
	maxTTL         = 24 * time.Hour
	minTTL         = time.Second
	maxProviderArg = maxResourceLen
	// maxResourceLen bounds an MCP server URL; maxChallengeLen the
	// WWW-Authenticate header relayed with it.
	maxResourceLen  = 2048
	maxChallengeLen = 4096
	// maxClientSecret bounds a start request's own client secret.
	maxClientSecret = 4096
)

// stateParam reads and bounds the {state} path value. ok is false if an
// error was written.
func (s *Server) stateParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	st := r.PathValue("state")
	switch {
	case st == "":
		s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "the state is empty")
		return "", false
	case len(st) > wire.MaxStateLen:
		s.writeError(w, r, http.StatusBadRequest, wire.CodeTooLarge, fmt.Sprintf("the state is over %d bytes; flowd never issues such a state", wire.MaxStateLen))
		return "", false
	}
	return st, true
}

func (s *Server) providerParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.PathValue("provider")
	if p == "" || len(p) > maxProviderArg {
		s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "the provider name is empty or too long")
		return "", false
	}
	return p, true
}

// tokenKey names the stored token a request is about: the path's provider
// and the optional ?account= (empty: the token stored under no account name).
func (s *Server) tokenKey(w http.ResponseWriter, r *http.Request) (engine.TokenKey, bool) {
	name, ok := s.providerParam(w, r)
	if !ok {
		return engine.TokenKey{}, false
	}
	account := r.URL.Query().Get("account")
	if len(account) > maxAccount {
		s.writeError(w, r, http.StatusBadRequest, wire.CodeTooLarge, fmt.Sprintf("account is over %d bytes", maxAccount))
		return engine.TokenKey{}, false
	}
	return engine.TokenKey{Provider: name, Account: account}, true
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	var req wire.StartRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	bad := func(code, format string, args ...any) {
		s.writeError(w, r, http.StatusBadRequest, code, fmt.Sprintf(format, args...))
	}
	if req.Provider == "" {
		known := s.cfg.Engine.Providers()
		if len(known) == 0 {
			bad(wire.CodeBadRequest, "provider is required, and no providers are configured; add one to flowd's config file")
		} else {
			bad(wire.CodeBadRequest, "provider is required; known providers: %s", strings.Join(known, ", "))
		}
		return
	}
	resource := engine.IsResourceURL(req.Provider)
	if limit := map[bool]int{false: maxNameLen, true: maxResourceLen}[resource]; len(req.Provider) > limit {
		bad(wire.CodeTooLarge, "provider is over %d bytes", limit)
		return
	}
	if len(req.Challenge) > maxChallengeLen {
		bad(wire.CodeTooLarge, "challenge is over %d bytes", maxChallengeLen)
		return
	}
	if req.Challenge != "" && !resource {
		bad(wire.CodeBadRequest, "challenge applies only to an MCP server URL (https://...)")
		return
	}
	if req.Transport != "" && !states.Transport(req.Transport).Valid() {
		bad(wire.CodeUnknownTransport, "transport %q is not loopback, gateway, manual or device", clip(req.Transport, 40))
		return
	}
	if len(req.Scopes) > maxScopes {
		bad(wire.CodeTooLarge, "%d scopes is over the limit of %d", len(req.Scopes), maxScopes)
		return
	}
	for i, sc := range req.Scopes {
		if sc == "" || len(sc) > maxScopeLen || strings.ContainsAny(sc, " \t\r\n") {
			bad(wire.CodeBadRequest, "scope %d is empty, over %d bytes, or contains spaces; pass each scope separately", i+1, maxScopeLen)
			return
		}
	}
	if len(req.Account) > maxAccount {
		bad(wire.CodeTooLarge, "account is over %d bytes", maxAccount)
		return
	}
	// The engine validates the client (wrapping engine.ErrBadClient);
	// here only what it cannot see: a secret or method with no client.
	// No message names the secret.
	var client *engine.Client
	switch {
	case len(req.ClientSecret) > maxClientSecret:
		bad(wire.CodeTooLarge, "client_secret is over %d bytes", maxClientSecret)
		return
	case req.ClientID == "" && (req.ClientSecret != "" || req.TokenAuth != ""):
		bad(wire.CodeBadClient, "client_secret and token_auth need client_id: pass the client_id registered at the provider with them, or none of the three to use the provider's configured client")
		return
	case req.ClientID != "":
		client = &engine.Client{ID: req.ClientID, Secret: req.ClientSecret, AuthMethod: engine.AuthMethod(req.TokenAuth)}
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < minTTL || d > maxTTL {
			bad(wire.CodeBadRequest, "ttl %q is not a duration between %v and %v (write it like \"5m\")", clip(req.TTL, 40), minTTL, maxTTL)
			return
		}
		ttl = d
	}
	// Every loopback flow gets a launch link: flowctl opens it instead of
	// the authorization URL, so nothing in the opener's argv is usable.
	sreq := engine.StartRequest{
		Provider: req.Provider, Scopes: req.Scopes, Transport: states.Transport(req.Transport),
		Account: req.Account, TTL: ttl, Launch: true, Client: client,
	}
	if resource {
		sreq.Provider, sreq.Resource, sreq.Challenge = "", req.Provider, req.Challenge
	}
	st, err := s.cfg.Engine.Start(r.Context(), sreq)
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	transport := req.Transport
	if transport == "" {
		transport = string(states.Loopback)
	}
	resp := wire.StartResponse{
		State: st.ID, Provider: req.Provider, Transport: transport, AuthURL: st.AuthURL,
		RedirectURI: st.RedirectURI, ExpiresAt: st.Deadline.UTC(), Superseded: st.Superseded, Scopes: st.Scopes,
		LaunchURL: st.LaunchURL,
	}
	if st.Device != nil {
		resp.UserCode, resp.VerificationURI, resp.VerificationURIComplete = st.Device.UserCode, st.Device.VerificationURI, st.Device.VerificationURIComplete
		resp.PollInterval = int(st.PollInterval / time.Second)
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	state, ok := s.stateParam(w, r)
	if !ok {
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("wait %q is not a duration such as \"30s\"", clip(v, 40)))
			return
		}
		wait = min(d, wire.MaxWait)
	}
	if wait == 0 {
		f, err := s.cfg.Engine.Status(r.Context(), state)
		if err != nil {
			s.engineError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, s.flowWithCode(r.Context(), f))
		return
	}
	// A long-poll ends when the flow is terminal, the wait is up, the client
	// goes away, or flowd shuts down. In all but the first the flow is
	// returned as it stands and the client polls again.
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	stop := context.AfterFunc(s.stopping, cancel)
	defer stop()
	f, err := s.cfg.Engine.Wait(ctx, state)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) && f.ID != "" {
		err = nil
	}
	if err != nil && errors.Is(err, engine.ErrClosed) && f.ID != "" {
		err = nil
	}
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FlowFrom(f))
}

// flowWithCode is f's wire form, with the user code of a live device flow
// so that a client re-attaching (flowctl wait) can show it again. The code
// is the same secret Start answered with, to the same local user.
func (s *Server) flowWithCode(ctx context.Context, f states.Flow) wire.Flow {
	w := wire.FlowFrom(f)
	if f.Transport == states.Device && f.State.Live() {
		if dc, err := s.cfg.Engine.DeviceCode(ctx, f.ID); err == nil {
			w.UserCode, w.VerificationURIComplete = dc.UserCode, dc.VerificationURIComplete
			if !dc.NextPoll.IsZero() {
				t := dc.NextPoll.UTC()
				w.NextPoll = &t
			}
		}
	}
	return w
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	state, ok := s.stateParam(w, r)
	if !ok {
		return
	}
	f, err := s.cfg.Engine.Cancel(r.Context(), state)
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FlowFrom(f))
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	state, ok := s.stateParam(w, r)
	if !ok {
		return
	}
	recs, err := s.cfg.Engine.History(r.Context(), state)
	if err == nil && len(recs) == 0 {
		err = engine.ErrUnknownState
	}
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.HistoryResponse{State: state, Records: recs})
}

// handleExport streams the log as JSON lines. A failure after the first
// byte aborts the connection, so a client never mistakes a cut export for
// a whole one.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var eq engine.ExportQuery
	if v := q.Get("flow"); v != "" {
		if len(v) > wire.MaxStateLen {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeTooLarge, fmt.Sprintf("flow is over %d bytes", wire.MaxStateLen))
			return
		}
		eq.Flow = v
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("since %q is not an RFC 3339 time, like 2026-01-31T14:00:00Z", v))
			return
		}
		eq.Since = t
	}
	started := false
	bw := bufio.NewWriter(w)
	err := s.cfg.Engine.Export(r.Context(), eq, func(rec states.Record) error {
		b, err := rec.Encode()
		if err != nil {
			return err
		}
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		bw.Write(b)
		return bw.WriteByte('\n')
	})
	if err != nil && !started {
		s.engineError(w, r, err)
		return
	}
	if err != nil {
		s.log.Error("export aborted", "err", err)
		panic(http.ErrAbortHandler)
	}
	if !started {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	if err := bw.Flush(); err != nil {
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var filter engine.Filter
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			st = strings.TrimSpace(st)
			if st == "" {
				continue
			}
			if !states.State(st).Valid() {
				s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest,
					fmt.Sprintf("status %q is not one of %s", clip(st, 40), joinStates(states.AllStates)))
				return
			}
			if !slices.Contains(filter.States, states.State(st)) {
				filter.States = append(filter.States, states.State(st))
			}
		}
	}
	filter.Provider = q.Get("provider")
	if len(filter.Provider) > maxProviderArg {
		s.writeError(w, r, http.StatusBadRequest, wire.CodeTooLarge, "provider is too long")
		return
	}
	flows, err := s.cfg.Engine.List(r.Context(), filter)
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	out := wire.ListResponse{Flows: make([]wire.Flow, 0, len(flows))}
	for _, f := range flows {
		out.Flows = append(out.Flows, wire.FlowFrom(f))
	}
	writeJSON(w, http.StatusOK, out)
}

func joinStates(ss []states.State) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ", ")
}

func (s *Server) handleRelayCallback(w http.ResponseWriter, r *http.Request) {
	var req wire.CallbackRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	p := engine.CallbackParams{State: req.State, Code: req.Code, Error: req.Error, ErrorDescription: req.ErrorDescription, Issuer: req.Iss}
	if req.URL != "" {
		if req.State != "" || req.Code != "" || req.Error != "" || req.ErrorDescription != "" || req.Iss != "" {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "give either url or the state, code, error and iss fields, not both")
			return
		}
		u, err := url.Parse(strings.TrimSpace(req.URL))
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "url is not a URL; paste the whole address the browser ended on")
			return
		}
		p = callbackParamsOf(u.Query())
		if p.State == "" {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "the url has no state parameter; paste the whole address the browser ended on, including everything after '?'")
			return
		}
	}
	if msg := checkCallbackParams(p); msg != "" {
		code := wire.CodeBadRequest
		if strings.Contains(msg, "over") {
			code = wire.CodeTooLarge
		}
		s.writeError(w, r, http.StatusBadRequest, code, msg)
		return
	}
	// The socket's peer uid or the gateway's service token vouch for the
	// sender: a pasted or relayed callback needs no browser binding.
	p.Authenticated = true
	// Without the request's cancellation: once a code is being exchanged,
	// a client going away must not cut the exchange.
	f, err := s.cfg.Engine.Callback(context.WithoutCancel(r.Context()), p)
	res := redirect.Classify(f, err)
	s.observeRelay(res)
	if outcome, ok := relayOutcome(res); ok {
		writeJSON(w, http.StatusOK, wire.CallbackResponse{Outcome: outcome, Message: pageText(res), Flow: wire.FlowFrom(res.Flow)})
		return
	}
	status, code, msg := classify(err)
	s.writeError(w, r, status, code, msg)
}

// checkCallbackParams bounds a callback before it reaches any flow. It
// returns "" if the parameters may be delivered.
func checkCallbackParams(p engine.CallbackParams) string {
	switch {
	case p.State == "":
		return "the callback has no state; it did not come from a flowd sign-in link"
	case len(p.State) > wire.MaxStateLen:
		return fmt.Sprintf("the state is over %d bytes; flowd never issues such a state", wire.MaxStateLen)
	case p.Code == "" && p.Error == "":
		// Refused before it reaches the flow: a mangled or prefetched
		// redirect must not end a sign-in the real redirect can still finish.
		return "the callback has neither a code nor an error; use the whole address the provider redirected the browser to"
	case len(p.Code) > wire.MaxCodeLen:
		return fmt.Sprintf("the code is over %d bytes", wire.MaxCodeLen)
	case len(p.Error) > 256:
		return "the error parameter is over 256 bytes"
	case len(p.ErrorDescription) > wire.MaxErrorDescriptionLen:
		return fmt.Sprintf("error_description is over %d bytes", wire.MaxErrorDescriptionLen)
	case len(p.Issuer) > wire.MaxIssuerLen:
		return fmt.Sprintf("iss is over %d bytes", wire.MaxIssuerLen)
	}
	return ""
}

func (s *Server) handleProviders(w http.ResponseWriter, r *http.Request) {
	v := s.providers.Load()
	ps := slices.Clone(v.providers)
	if ps == nil {
		ps = []wire.Provider{}
	}
	if v.status != nil {
		ps = v.status.Describe(ps)
	}
	if m, ok := s.cfg.Engine.(interface {
		MCPConnections(context.Context) ([]engine.MCPConnection, error)
	}); ok {
		conns, err := m.MCPConnections(r.Context())
		if err != nil {
			s.engineError(w, r, err)
			return
		}
		for _, c := range conns {
			ps = append(ps, wire.Provider{
				Name: c.Resource, AuthURL: c.AuthURL, TokenURL: c.TokenURL, Issuer: c.AuthServer, ClientID: c.ClientID,
				AuthMethod: c.TokenAuth, AuthMethodFrom: "discovery", IssuerRequired: c.IssInRedirect,
				MCP: &wire.MCPConnection{Resource: c.ResourceIndicator, AuthServer: c.AuthServer, Registration: c.Registration, TokenAuth: c.TokenAuth},
			})
		}
	}
	slices.SortFunc(ps, func(a, b wire.Provider) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, wire.ProvidersResponse{Providers: ps, ConfigFile: v.configFile, ConfigFileFound: v.configFileFound})
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Reload == nil {
		s.writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "this flowd cannot reload its config; restart it to apply changes")
		return
	}
	resp, err := s.cfg.Reload(r.Context())
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		// The message is the file, the field and the reason: written for
		// the user, and carrying no secret (config errors never quote values).
		s.writeError(w, r, http.StatusUnprocessableEntity, wire.CodeInvalidConfig,
			ce.Error()+"; flowd goes on with the config it had: fix the file and reload again")
		return
	case errors.Is(err, engine.ErrInvalidProvider):
		s.writeError(w, r, http.StatusUnprocessableEntity, wire.CodeInvalidConfig,
			err.Error()+"; flowd goes on with the config it had: fix the file and reload again")
		return
	case err != nil:
		s.engineError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	key, ok := s.tokenKey(w, r)
	if !ok {
		return
	}
	name := key.Provider
	get := s.cfg.Engine.Token
	switch r.URL.Query().Get("force") {
	case "", "false":
	case "true":
		get = s.cfg.Engine.ForceRefresh // an API refused the token before it expired
	default:
		s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "force must be true or false")
		return
	}
	key, err := s.cfg.Engine.ResolveAccount(r.Context(), key)
	var tok *oauth2.Token
	var st engine.StoredToken
	if err == nil {
		tok, st, err = get(r.Context(), key)
	}
	if err != nil {
		status, code, msg := s.tokenError(err, key)
		s.writeError(w, r, status, code, msg)
		return
	}
	resp := wire.TokenResponse{Provider: name, Account: key.Account, AccessToken: tok.AccessToken, TokenType: tok.TokenType,
		Expiry: tok.Expiry.UTC(), Scopes: st.Scopes, Flow: st.Flow, ObtainedAt: st.Obtained.UTC()}
	if tok.Expiry.IsZero() {
		resp.Expiry = time.Time{}
	}
	if st.Obtained.IsZero() {
		resp.ObtainedAt = time.Time{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request) {
	key, ok := s.tokenKey(w, r)
	if !ok {
		return
	}
	name := key.Provider
	key, err := s.cfg.Engine.ResolveAccount(r.Context(), key)
	var res engine.Disconnection
	if err == nil {
		res, err = s.cfg.Engine.Disconnect(r.Context(), key)
	}
	if errors.Is(err, engine.ErrNoToken) {
		writeJSON(w, http.StatusOK, wire.DisconnectResponse{Provider: name, Account: key.Account, Removed: false})
		return
	}
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	s.log.Info("provider disconnected", "provider", name, "account", key.Account, "revocation", res.Revocation)
	resp := wire.DisconnectResponse{Provider: name, Account: key.Account, Removed: true, Revocation: string(res.Revocation)}
	if res.Revocation == states.RevocationFailed {
		resp.RevocationError = res.ErrorCode
		if res.HTTPStatus != 0 {
			resp.RevocationError += fmt.Sprintf(" (HTTP %d)", res.HTTPStatus)
		}
		if res.Message != "" {
			resp.RevocationError += ": " + res.Message
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleConnections lists the connections, all or one provider's.
func (s *Server) handleConnections(w http.ResponseWriter, r *http.Request) {
	provider := r.URL.Query().Get("provider")
	if provider != "" && !slices.Contains(s.cfg.Engine.Providers(), provider) {
		s.engineError(w, r, &engine.UnknownProviderError{Name: provider, Known: s.cfg.Engine.Providers()})
		return
	}
	cs, err := s.cfg.Engine.Connections(r.Context())
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	out := wire.ConnectionsResponse{Connections: []wire.Connection{}}
	for _, c := range cs {
		if provider == "" || c.Provider == provider {
			out.Connections = append(out.Connections, connectionFrom(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// connectionFrom converts the engine's view of a connection to its wire form.
func connectionFrom(c engine.Connection) wire.Connection {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	w := wire.Connection{
		Provider: c.Provider, Account: c.Account, Flow: c.Flow, ConnectedAt: c.Connected.UTC(), Scopes: c.Scopes,
		ClientID: c.ClientID, Registration: c.Registration,
		ExpiresAt: at(c.Expiry), HasRefreshToken: c.HasRefreshToken, Health: string(c.Health),
		LastRefreshAt: at(c.LastRefresh), Refreshes: c.Refreshes, Rotations: c.Rotations, FailingSince: at(c.FailingSince),
	}
	if f := c.LastFailure; f != nil {
		w.ErrorCode, w.Message, w.HTTPStatus, w.Transient = f.ErrorCode, f.Message, f.HTTPStatus, f.Transient
	}
	return w
}

// tokenError maps a token call's error to the API's answer, adding the
// advice the engine leaves to flowd: what the user runs next.
func (s *Server) tokenError(err error, key engine.TokenKey) (status int, code, msg string) {
	again := "flowctl connect " + key.Provider
	var re *engine.RefreshError
	switch {
	case errors.Is(err, engine.ErrNoToken):
		return http.StatusNotFound, wire.CodeNotConnected, fmt.Sprintf("no token is stored for %s; connect first: %s", key.Provider, again)
	case errors.Is(err, engine.ErrNoRefreshToken):
		return http.StatusBadGateway, wire.CodeProviderError,
			fmt.Sprintf("the token for %s expired and the provider gave no refresh token; reconnect: %s", key.Provider, again)
	case errors.Is(err, engine.ErrTokenUnreadable):
		return http.StatusInternalServerError, wire.CodeInternal, fmt.Sprintf("%v; reconnect: %s", err, again)
	case errors.As(err, &re):
		msg := re.Error()
		switch {
		case re.NeedsReconnect():
			msg += "; the refresh token is no longer valid, reconnect: " + again
		case re.Transient:
			msg += "; the stored token is kept: retry later (flowctl status " + key.Provider + " shows since when it fails)"
		default:
			msg += "; check the provider's client settings, or reconnect: " + again
		}
		return http.StatusBadGateway, wire.CodeProviderError, msg
	}
	return s.classify(err)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, wire.HealthResponse{
		Status: "ok", Version: s.cfg.Version, StartedAt: s.started, Listen: s.cfg.Listen,
		LoopbackRedirectURI: s.cfg.LoopbackRedirectURI, GatewayRedirectURI: s.cfg.GatewayRedirectURI,
		Providers: len(s.cfg.Engine.Providers()),
	})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Metrics == nil {
		s.writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "metrics are not enabled in this flowd")
		return
	}
	s.cfg.Metrics.Handler().ServeHTTP(w, r)
}
