package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/mcpauth"
	"github.com/flowdhq/flowd/states"
)

// writeJSON writes v with status. Responses are never cached: they carry
// flow state, and the token route an access token.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

// writeError writes the one error shape.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "pattern", r.Pattern, "code", code, "err", msg)
	}
	writeJSON(w, status, wire.Error{Err: wire.ErrorBody{Code: code, Message: msg}})
}

// engineError answers an error from the engine with the status, code and
// next step it calls for.
func (s *Server) engineError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := s.classify(err)
	s.writeError(w, r, status, code, msg)
}

// classify is classify with what only the server knows: a provider that
// is configured but not usable yet is unavailable, not unknown.
func (s *Server) classify(err error) (status int, code, msg string) {
	var upe *engine.UnknownProviderError
	if status := s.providers.Load().status; status != nil && errors.As(err, &upe) {
		if why, ok := status.Unavailable(upe.Name); ok {
			return http.StatusServiceUnavailable, wire.CodeProviderUnavailable, why
		}
	}
	return classify(err)
}

// classify maps an engine error to the API's status, code and message.
// Messages say what to do next.
func classify(err error) (status int, code, msg string) {
	var fe *engine.FlowError
	var upe *engine.UnknownProviderError
	var mbe *http.MaxBytesError
	var are *engine.AccountRequiredError
	switch {
	case errors.As(err, &are):
		return http.StatusConflict, wire.CodeAccountRequired, fmt.Sprintf(
			"%s; pick one with --account, like: flowctl token %s --account %s", are.Error(), are.Provider, are.Accounts[0])
	case errors.As(err, &upe):
		return http.StatusNotFound, wire.CodeUnknownProvider, upe.Error()
	case errors.Is(err, engine.ErrUnknownProvider):
		return http.StatusNotFound, wire.CodeUnknownProvider, err.Error()
	case errors.As(err, &fe):
		return flowErrorStatus(fe)
	case errors.Is(err, engine.ErrUnknownState):
		return http.StatusNotFound, wire.CodeUnknownState,
			"no flow has this state: it may be mistyped, belong to another flowd, or have been pruned after the retention period; list flows with: flowctl list, or start a new one with: flowctl connect <provider>"
	case errors.Is(err, mcpauth.ErrBadResource):
		return http.StatusBadRequest, wire.CodeBadRequest, err.Error()
	case errors.Is(err, mcpauth.ErrResourceMismatch), errors.Is(err, mcpauth.ErrIssuerMismatch), errors.Is(err, mcpauth.ErrNoS256):
		return http.StatusBadGateway, wire.CodeMCPRefused, err.Error()
	case errors.Is(err, mcpauth.ErrNoResourceMetadata), errors.Is(err, mcpauth.ErrNoAuthServer),
		errors.Is(err, mcpauth.ErrNoServerMetadata), errors.Is(err, mcpauth.ErrRegistration):
		return http.StatusBadGateway, wire.CodeMCPDiscovery, err.Error()
	case errors.Is(err, engine.ErrNoClient):
		return http.StatusBadGateway, wire.CodeMCPDiscovery, err.Error() + `; add one to flowd's config: [mcp.clients."<issuer>"] client_id = "..."`
	case errors.Is(err, engine.ErrStepUpFutile):
		return http.StatusConflict, wire.CodeStepUpFutile, err.Error() + "; the server keeps refusing scopes it was granted: check its configuration, or run flowctl disconnect and connect again"
	case errors.Is(err, engine.ErrNoGateway):
		return http.StatusBadRequest, wire.CodeGatewayNotConfigured, err.Error()
	case errors.Is(err, engine.ErrBadTransport):
		return http.StatusBadRequest, wire.CodeUnknownTransport, err.Error()
	case errors.Is(err, engine.ErrNoDeviceEndpoint):
		return http.StatusBadRequest, wire.CodeDeviceNotSupported,
			err.Error() + "; use --transport manual, or set device_auth_url for the provider in flowd's config"
	case errors.Is(err, engine.ErrDeviceAuthorization):
		return http.StatusBadGateway, wire.CodeDeviceAuthorizationFailed,
			err.Error() + "; check the provider's client settings (device flow enabled, client type), or use --transport manual"
	case errors.Is(err, engine.ErrBadClient):
		return http.StatusBadRequest, wire.CodeBadClient, err.Error()
	case errors.Is(err, engine.ErrClientMissing):
		return http.StatusNotFound, wire.CodeNotConnected, err.Error() + ": flowctl connect <provider>, with the same client"
	case errors.Is(err, engine.ErrNoToken):
		return http.StatusNotFound, wire.CodeNotConnected, err.Error() + "; connect first: flowctl connect <provider>"
	case errors.Is(err, engine.ErrClosed):
		return http.StatusServiceUnavailable, wire.CodeUnavailable, "flowd is shutting down; start it again and retry"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("the request body is over %d bytes", mbe.Limit)
	case errors.Is(err, engine.ErrStorageFull):
		return http.StatusInsufficientStorage, wire.CodeStorageFull,
			fmt.Sprintf("flowd's store is full, so nothing was changed (%v): free space on the disk holding the state directory (see flowd -h), or raise the etcd quota and disarm its NOSPACE alarm, and retry", err)
	case errors.Is(err, engine.ErrLogUnavailable):
		// The backend's message names what it could not reach.
		return http.StatusServiceUnavailable, wire.CodeUnavailable, fmt.Sprintf("flowd's store is unavailable, so nothing was changed (%v); retry once it serves", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, wire.CodeUnavailable, "the request was canceled before flowd finished it; retry"
	}
	return http.StatusInternalServerError, wire.CodeInternal, fmt.Sprintf("flowd could not complete the request (%v); see flowd's log", err)
}

func flowErrorStatus(fe *engine.FlowError) (int, string, string) {
	f := fe.Flow
	id := states.ShortID(f.ID)
	again := fmt.Sprintf("start a new one with: flowctl connect %s", f.Provider)
	switch {
	case errors.Is(fe.Err, engine.ErrBindingMissing), errors.Is(fe.Err, engine.ErrBindingMismatch):
		return http.StatusForbidden, wire.CodeNotBound,
			fmt.Sprintf("flow %s is bound to the browser that opened its launch link, and this callback did not come from it; nothing changed and the flow still waits; paste its URL to flowctl instead: flowctl connect prints the prompt with --transport manual", id)
	case errors.Is(fe.Err, engine.ErrExchangeInProgress), !f.State.Terminal():
		return http.StatusConflict, wire.CodeExchangeInProgress,
			fmt.Sprintf("flow %s is exchanging its authorization code right now; wait for the outcome with: flowctl wait %s", id, f.ID)
	case errors.Is(fe.Err, engine.ErrExpired), f.State == states.Expired:
		return http.StatusNotFound, wire.CodeFlowExpired,
			fmt.Sprintf("flow %s expired at %s (%s); %s", id, f.Deadline.UTC().Format("2006-01-02 15:04:05Z"), f.Reason.Describe(), again)
	default:
		return http.StatusNotFound, wire.CodeFlowFinished,
			fmt.Sprintf("flow %s has already ended: %s (%s); %s", id, f.State, f.Reason.Describe(), again)
	}
}

// decodeJSON reads exactly one JSON object into v, refusing unknown
// fields (a typo should fail loudly, not be ignored). ok is false if an
// error was written.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		s.writeError(w, r, http.StatusUnsupportedMediaType, wire.CodeBadRequest, "send the body as application/json")
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value in the body")
	}
	if err == nil {
		if _, rerr := io.Copy(io.Discard, r.Body); rerr != nil {
			err = rerr
		}
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeError(w, r, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("the request body is over %d bytes", mbe.Limit))
			return false
		}
		if errors.Is(err, io.EOF) {
			s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "the request body is empty; send a JSON object")
			return false
		}
		s.writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("the request body is not valid: %v", clip(err.Error(), 200)))
		return false
	}
	return true
}
