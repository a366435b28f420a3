package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"flowd.local/flowd/cmd/internal/wire"
	"flowd.local/flowd/engine"
	"flowd.local/flowd/states"
)

// pageKind is what the callback page tells the browser. Each kind has its
// own title; none but connected says anything like success.
type pageKind string

const (
	pageConnected   pageKind = "connected"
	pageDenied      pageKind = "denied"
	pageWrongIssuer pageKind = "wrong_issuer"
	pageFailed      pageKind = "failed"
	pageExpired     pageKind = "expired"
	pageAlreadyUsed pageKind = "already_used"
	pageEnded       pageKind = "ended"
	pageInProgress  pageKind = "in_progress"
	pageUnknown     pageKind = "unknown"
	pageMalformed   pageKind = "malformed"
	pageUnavailable pageKind = "unavailable"
	pageInternal    pageKind = "internal"
)

// result is what delivering a callback came to, for the page and for the
// relay's JSON answer.
type result struct {
	kind       pageKind
	pageStatus int
	flow       states.Flow
	// outcome is set when the callback was applied to a live flow
	// (a 200 from the relay route); otherwise the api* fields say the error.
	outcome    wire.Outcome
	apiStatus  int
	apiCode    string
	apiMessage string
	detail     string
}

// deliver hands a callback to the engine and says what came of it. The
// engine is called without the request's cancellation: once a code is
// being exchanged, a browser closing its tab must not cut the exchange.
func (s *Server) deliver(r *http.Request, p engine.CallbackParams) result {
	f, err := s.cfg.Engine.Callback(context.WithoutCancel(r.Context()), p)
	res := result{flow: f}
	if err == nil {
		res.pageStatus, res.apiStatus = http.StatusOK, http.StatusOK
		switch {
		case f.State == states.Complete:
			res.kind, res.outcome = pageConnected, wire.OutcomeConnected
		case f.Reason == states.ProviderDenied:
			res.kind, res.outcome = pageDenied, wire.OutcomeDenied
		case f.Reason == states.IssuerMismatch:
			// Not the provider's doing and not an exchange failure: the
			// redirect named another issuer (or none), so its code was
			// never used.
			res.kind, res.outcome = pageWrongIssuer, wire.OutcomeFailed
			res.pageStatus = http.StatusBadRequest
		default:
			res.kind, res.outcome = pageFailed, wire.OutcomeFailed
			res.pageStatus = http.StatusBadGateway
		}
		s.log.Info("callback delivered", "flow", states.ShortID(f.ID), "provider", f.Provider, "outcome", res.outcome)
		return res
	}
	res.apiStatus, res.apiCode, res.apiMessage = classify(err)
	var fe *engine.FlowError
	switch {
	case errors.As(err, &fe):
		res.flow = fe.Flow
		switch res.apiCode {
		case wire.CodeExchangeInProgress:
			res.kind, res.pageStatus = pageInProgress, http.StatusConflict
		case wire.CodeFlowExpired:
			res.kind, res.pageStatus = pageExpired, http.StatusGone
		default:
			res.kind, res.pageStatus = pageEnded, http.StatusConflict
			if fe.Flow.State == states.Complete {
				res.kind = pageAlreadyUsed
			}
		}
		s.log.Info("callback ignored", "flow", states.ShortID(fe.Flow.ID), "provider", fe.Flow.Provider, "why", res.apiCode)
	case errors.Is(err, engine.ErrUnknownState):
		res.kind, res.pageStatus = pageUnknown, http.StatusNotFound
		s.log.Info("callback for an unknown state", "flow", states.ShortID(p.State))
	case errors.Is(err, engine.ErrClosed):
		res.kind, res.pageStatus = pageUnavailable, http.StatusServiceUnavailable
	default:
		res.kind, res.pageStatus = pageInternal, http.StatusInternalServerError
		s.log.Error("callback failed", "flow", states.ShortID(p.State), "err", err)
	}
	return res
}

// text is the result as one sentence, for the relay's JSON and the page.
func (res result) text() string {
	f := res.flow
	again := "To try again, run: flowctl connect " + f.Provider
	switch res.kind {
	case pageConnected:
		if f.Account != "" {
			return fmt.Sprintf("flowd connected your %s account %s. You can close this tab.", f.Provider, f.Account)
		}
		return fmt.Sprintf("flowd connected your %s account. You can close this tab.", f.Provider)
	case pageDenied:
		said := f.ErrorCode
		if f.Message != "" {
			said += ": " + f.Message
		}
		return fmt.Sprintf("%s denied the request (%s). Nothing was stored. %s", f.Provider, said, again)
	case pageWrongIssuer:
		return fmt.Sprintf("Not connected: this redirect did not come from %s's authorization server as flowd expected (%s). "+
			"Its code was not used and nothing was stored. If you did not just sign in to %s, someone may be trying to trick flowd. %s",
			f.Provider, f.Message, f.Provider, again)
	case pageFailed:
		msg := fmt.Sprintf("Not connected: %s.", f.Reason.Describe())
		if f.Message != "" {
			msg += " " + f.Message
		}
		if f.ErrorCode != "" {
			msg += " (" + f.ErrorCode + ")"
		}
		return msg + " Nothing was stored. " + again
	case pageExpired:
		return "This sign-in link has expired: " + f.Reason.Describe() + ". This visit was ignored and nothing was stored. " + again
	case pageAlreadyUsed:
		return "This sign-in link was already used: the sign-in it started has finished. This visit was ignored and changed nothing."
	case pageEnded:
		return fmt.Sprintf("This sign-in had already ended (%s). This visit was ignored and nothing was stored. %s", f.Reason.Describe(), again)
	case pageInProgress:
		return "flowd is already exchanging the code from an earlier visit to this link. This visit was ignored; see your terminal for the outcome."
	case pageUnknown:
		return "flowd has no sign-in with this state: the link may be mistyped, very old, or meant for flowd on another machine. Nothing changed. Start again with: flowctl connect <provider>"
	case pageMalformed:
		return "This is not a valid sign-in callback (" + res.detail + "). Nothing changed."
	case pageUnavailable:
		return "flowd is shutting down and could not take this sign-in. Start flowd and connect again."
	}
	return "flowd could not record the outcome of this sign-in; see flowd's log. Connect again with: flowctl connect " + f.Provider
}

var titles = map[pageKind]string{
	pageConnected:   "Connected",
	pageDenied:      "Not connected: access denied",
	pageWrongIssuer: "Not connected: response from the wrong server",
	pageFailed:      "Not connected",
	pageExpired:     "Not connected: link expired",
	pageAlreadyUsed: "Already used",
	pageEnded:       "Not connected: sign-in already ended",
	pageInProgress:  "Already in progress",
	pageUnknown:     "Unknown sign-in",
	pageMalformed:   "Invalid callback",
	pageUnavailable: "flowd unavailable",
	pageInternal:    "Not connected: flowd error",
}

// page is deliberately tiny: no scripts, no external resources.
var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer">
<title>flowd: {{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}h1{font-size:1.4em}</style>
</head><body class="{{.Kind}}"><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

func (s *Server) writePage(w http.ResponseWriter, res result) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The page's URL carries the authorization code: never send it on.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(res.pageStatus)
	_ = page.Execute(w, struct {
		Title, Text string
		Kind        pageKind
	}{titles[res.kind], res.text(), res.kind})
}

// handleBrowserCallback is the provider's redirect to the loopback
// listener: GET /oauth/callback?state=...&code=... (or error=...).
func (s *Server) handleBrowserCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := callbackParamsOf(q)
	if msg := checkCallbackParams(p); msg != "" {
		s.writePage(w, result{kind: pageMalformed, pageStatus: http.StatusBadRequest, detail: msg})
		return
	}
	s.writePage(w, s.deliver(r, p))
}

// callbackParamsOf reads a redirect's query, iss included (RFC 9207): the
// engine checks it against the issuer the flow expects.
func callbackParamsOf(q url.Values) engine.CallbackParams {
	return engine.CallbackParams{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"),
		ErrorDescription: q.Get("error_description"), Issuer: q.Get("iss")}
}

// handlePreflight answers a CORS or Private Network Access preflight for
// the callback. It touches no flow: a preflight is not a callback, and
// treating it as one would spend or break the flow before the real GET.
func (s *Server) handlePreflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Allow", "GET, OPTIONS")
	if origin := r.Header.Get("Origin"); origin != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", "GET")
		h.Set("Access-Control-Max-Age", "600")
		h.Add("Vary", "Origin")
	}
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
	w.WriteHeader(http.StatusNoContent)
}
