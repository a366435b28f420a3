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

	"flowd.local/flowd/cmd/internal/wire"
	"flowd.local/flowd/engine"
	"flowd.local/flowd/states"
)

// Bounds on start requests, beyond the body size.
const (
	maxScopes      = 64
	maxScopeLen    = 256
	maxNameLen     = 128
	maxPrincipal   = 256
	maxTTL         = 24 * time.Hour
	minTTL         = time.Second
	maxProviderArg = 128
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
// and the optional ?principal= a flow was started with (empty: the local user).
func (s *Server) tokenKey(w http.ResponseWriter, r *http.Request) (engine.TokenKey, bool) {
	name, ok := s.providerParam(w, r)
	if !ok {
		return engine.TokenKey{}, false
	}
	principal := r.URL.Query().Get("principal")
	if len(principal) > maxPrincipal {
		s.writeError(w, r, http.StatusBadRequest, wire.CodeTooLarge, fmt.Sprintf("principal is over %d bytes", maxPrincipal))
		return engine.TokenKey{}, false
	}
	return engine.TokenKey{Provider: name, Account: principal}, true
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
	if len(req.Provider) > maxNameLen {
		bad(wire.CodeTooLarge, "provider is over %d bytes", maxNameLen)
		return
	}
	if req.Transport != "" && !states.Transport(req.Transport).Valid() {
		bad(wire.CodeUnknownTransport, "transport %q is not loopback, gateway or manual", clip(req.Transport, 40))
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
	if len(req.Principal) > maxPrincipal {
		bad(wire.CodeTooLarge, "principal is over %d bytes", maxPrincipal)
		return
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
	st, err := s.cfg.Engine.Start(r.Context(), engine.StartRequest{
		Provider: req.Provider, Scopes: req.Scopes, Transport: states.Transport(req.Transport),
		Principal: req.Principal, TTL: ttl,
	})
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	transport := req.Transport
	if transport == "" {
		transport = string(states.Loopback)
	}
	writeJSON(w, http.StatusCreated, wire.StartResponse{
		State: st.ID, Provider: req.Provider, Transport: transport, AuthURL: st.AuthURL,
		RedirectURI: st.RedirectURI, ExpiresAt: st.Deadline.UTC(), Superseded: st.Superseded,
	})
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
		writeJSON(w, http.StatusOK, wire.FlowFrom(f))
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
	res := s.deliver(r, p)
	if res.outcome != "" {
		writeJSON(w, http.StatusOK, wire.CallbackResponse{Outcome: res.outcome, Message: res.text(), Flow: wire.FlowFrom(res.flow)})
		return
	}
	s.writeError(w, r, res.apiStatus, res.apiCode, res.apiMessage)
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
	ps := slices.Clone(s.cfg.Providers)
	if ps == nil {
		ps = []wire.Provider{}
	}
	slices.SortFunc(ps, func(a, b wire.Provider) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, wire.ProvidersResponse{Providers: ps})
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	key, ok := s.tokenKey(w, r)
	if !ok {
		return
	}
	name := key.Provider
	tok, st, err := s.cfg.Engine.Token(r.Context(), key)
	if err != nil {
		status, code, msg := classify(err)
		if code == wire.CodeInternal {
			// Engine token errors that are not typed are refresh failures;
			// their text is written for users and carries no secret.
			status, code, msg = http.StatusBadGateway, wire.CodeProviderError, err.Error()
		}
		if code == wire.CodeNotConnected {
			msg = fmt.Sprintf("no token is stored for %s; connect first: flowctl connect %s", name, name)
		}
		s.writeError(w, r, status, code, msg)
		return
	}
	resp := wire.TokenResponse{Provider: name, AccessToken: tok.AccessToken, TokenType: tok.TokenType,
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
	err := s.cfg.Engine.Disconnect(r.Context(), key)
	if errors.Is(err, engine.ErrNoToken) {
		writeJSON(w, http.StatusOK, wire.DisconnectResponse{Provider: name, Removed: false})
		return
	}
	if err != nil {
		s.engineError(w, r, err)
		return
	}
	s.log.Info("provider disconnected", "provider", name)
	writeJSON(w, http.StatusOK, wire.DisconnectResponse{Provider: name, Removed: true})
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
