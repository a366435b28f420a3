package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
)

// maxWait bounds a status long-poll; a client polls again after it.
const maxWait = 5 * time.Minute

// newHandler serves the assistant's routes on e. Every route but the
// browser's redirect needs apiKey as a bearer token.
func newHandler(e *engine.Engine, apiKey string) http.Handler {
	mux := http.NewServeMux()
	guard := func(h http.HandlerFunc) http.HandlerFunc {
		want := []byte("Bearer " + apiKey)
		return func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
				reply(w, http.StatusUnauthorized, errBody("send the API key as: Authorization: Bearer $ASSISTANTD_API_KEY"))
				return
			}
			h(w, r)
		}
	}

	mux.HandleFunc("POST /connect/{provider}", guard(func(w http.ResponseWriter, r *http.Request) {
		// An optional body brings the user's own OAuth app: the engine
		// seals its secret with the flow and the connection it makes.
		var body struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			reply(w, http.StatusBadRequest, errBody("the body is JSON: {\"client_id\": ..., \"client_secret\": ...}, or empty for the configured client"))
			return
		}
		req := engine.StartRequest{Provider: r.PathValue("provider")}
		if body.ClientID != "" || body.ClientSecret != "" {
			req.Client = &engine.Client{ID: body.ClientID, Secret: body.ClientSecret}
		}
		st, err := e.Start(r.Context(), req)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusCreated, map[string]any{"state": st.ID, "auth_url": st.AuthURL, "deadline": st.Deadline})
	}))

	// The status route answers once the flow has ended, or after ?wait
	// (default 30s) with the flow as it stands.
	mux.HandleFunc("GET /connect/{state}", guard(func(w http.ResponseWriter, r *http.Request) {
		wait := 30 * time.Second
		if s := r.URL.Query().Get("wait"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				reply(w, http.StatusBadRequest, errBody("wait must be a duration such as 30s"))
				return
			}
			wait = min(d, maxWait)
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		f, err := e.Wait(ctx, r.PathValue("state"))
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]any{"status": f.State, "reason": f.Reason, "provider": f.Provider, "done": f.State.Terminal()})
	}))

	// The provider's redirect: engine/redirect guards it (a prefetch or a
	// reload without code or error changes nothing) and writes the page.
	mux.Handle(engine.CallbackPath, &redirect.Handler{Engine: e})

	mux.HandleFunc("GET /token/{provider}", guard(func(w http.ResponseWriter, r *http.Request) {
		tok, _, err := e.Token(r.Context(), engine.TokenKey{Provider: r.PathValue("provider")})
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]any{"access_token": tok.AccessToken, "token_type": tok.Type(), "expiry": tok.Expiry})
	}))
	return mux
}

// status is the HTTP status for an engine error, by its documented classes.
func status(err error) int {
	var fe *engine.FlowError
	switch {
	case errors.Is(err, engine.ErrUnknownProvider), errors.Is(err, engine.ErrUnknownState), errors.Is(err, engine.ErrNoToken):
		return http.StatusNotFound
	case errors.Is(err, engine.ErrBadClient):
		return http.StatusBadRequest
	case errors.As(err, &fe):
		return http.StatusConflict
	case errors.Is(err, engine.ErrStorageFull):
		return http.StatusInsufficientStorage
	case errors.Is(err, engine.ErrLogUnavailable), errors.Is(err, engine.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func fail(w http.ResponseWriter, err error) { reply(w, status(err), errBody(err.Error())) }

func errBody(msg string) map[string]string { return map[string]string{"error": msg} }

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store") // the token route carries a token
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
