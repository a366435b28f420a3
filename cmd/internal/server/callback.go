package server

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
	"github.com/flowdhq/flowd/states"
)

// The loopback listener's browser routes (launch link, callback, preflight)
// are served by engine/redirect, the handler embedders mount too; flowd
// adds its own pages, which say how to start again with flowctl, and its
// logs and metrics.

// observe logs and counts every outcome of the browser routes. It never
// sees the code or the binding cookie.
func (s *Server) observe(r *http.Request, res redirect.Result) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Browser(string(res.Kind))
	}
	f := res.Flow
	switch res.Kind {
	case redirect.KindConnected, redirect.KindDenied, redirect.KindFailed, redirect.KindWrongIssuer:
		s.log.Info("callback delivered", "flow", states.ShortID(f.ID), "provider", f.Provider, "outcome", res.Kind)
	case redirect.KindBindingMissing, redirect.KindBindingMismatch:
		s.log.Warn("callback refused: not from the browser the flow is bound to", "flow", states.ShortID(f.ID), "provider", f.Provider, "why", res.Kind)
	case redirect.KindLaunchUsed:
		s.log.Warn("launch link opened a second time; the first browser keeps the binding", "why", res.Kind)
	case redirect.KindLaunched:
		s.log.Info("launch link opened: flow bound to the browser", "flow", states.ShortID(f.ID))
	case redirect.KindInternal:
		s.log.Error("callback failed", "flow", states.ShortID(f.ID), "err", res.Err)
	case redirect.KindUnknown:
		s.log.Info("callback for an unknown state")
	case redirect.KindMalformed, redirect.KindPrefetch, redirect.KindLaunchUnknown:
		s.log.Debug("browser request changed nothing", "why", res.Kind)
	default:
		s.log.Info("callback ignored", "flow", states.ShortID(f.ID), "provider", f.Provider, "why", res.Kind)
	}
}

// observeRelay logs a relayed or pasted callback's outcome.
func (s *Server) observeRelay(res redirect.Result) {
	f := res.Flow
	switch res.Kind {
	case redirect.KindConnected, redirect.KindDenied, redirect.KindFailed, redirect.KindWrongIssuer:
		s.log.Info("callback delivered", "flow", states.ShortID(f.ID), "provider", f.Provider, "outcome", res.Kind)
	case redirect.KindUnknown:
		s.log.Info("callback for an unknown state")
	case redirect.KindInternal:
		s.log.Error("callback failed", "flow", states.ShortID(f.ID), "err", res.Err)
	default:
		s.log.Info("callback ignored", "flow", states.ShortID(f.ID), "provider", f.Provider, "why", res.Kind)
	}
}

// flowdPages are flowd's callback pages: the package's wording plus how to
// start again with flowctl.
type flowdPages struct{}

func (flowdPages) WritePage(w http.ResponseWriter, _ *http.Request, res redirect.Result) {
	w.WriteHeader(res.Status)
	_ = page.Execute(w, struct {
		Title, Text string
		Kind        redirect.Kind
	}{redirect.Title(res.Kind), pageText(res), res.Kind})
}

// pageText is the page's sentence: what happened, and what to do next.
func pageText(res redirect.Result) string {
	f := res.Flow
	again := " To try again, run: flowctl connect " + f.Provider
	switch res.Kind {
	case redirect.KindConnected:
		if f.Account != "" {
			return fmt.Sprintf("flowd connected your %s account %s. You can close this tab.", f.Provider, f.Account)
		}
		return fmt.Sprintf("flowd connected your %s account. You can close this tab.", f.Provider)
	case redirect.KindDenied, redirect.KindFailed, redirect.KindExpired, redirect.KindEnded:
		return redirect.Text(res) + again
	case redirect.KindWrongIssuer:
		return fmt.Sprintf("Not connected: this redirect did not come from %s's authorization server as flowd expected (%s). "+
			"Its code was not used and nothing was stored. If you did not just sign in to %s, someone may be trying to trick flowd.%s",
			f.Provider, f.Message, f.Provider, again)
	case redirect.KindInProgress:
		return "flowd is already exchanging the code from an earlier visit to this link. This visit was ignored; see your terminal for the outcome."
	case redirect.KindUnknown:
		return "flowd has no sign-in with this state: the link may be mistyped, very old, or meant for flowd on another machine. Nothing changed. Start again with: flowctl connect <provider>"
	case redirect.KindUnavailable:
		return "flowd is shutting down and could not take this sign-in. Start flowd and connect again."
	case redirect.KindBindingMissing, redirect.KindBindingMismatch:
		return redirect.Text(res) + " If this is your own sign-in, finish it in the browser flowctl opened, or paste this page's address at flowctl's prompt (flowctl connect --transport manual)."
	case redirect.KindLaunchUsed:
		return "This one-time sign-in link was already opened. Nothing changed. If you did not open it in another tab, someone else on this computer may have: press Ctrl+C where flowctl runs and connect again."
	case redirect.KindLaunchUnknown:
		return "This one-time sign-in link has expired or is unknown (it works once, for seconds). Nothing changed. Open the URL flowctl printed instead (the flow is then not browser-bound), or run flowctl connect again."
	case redirect.KindInternal:
		return "flowd could not record the outcome of this sign-in; see flowd's log. Connect again with: flowctl connect " + f.Provider
	}
	return redirect.Text(res)
}

// page is deliberately tiny: no scripts, no external resources.
var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer">
<title>flowd: {{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}h1{font-size:1.4em}</style>
</head><body class="{{.Kind}}"><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

// relayOutcome is the relay route's answer for a callback the engine
// applied (ok) or the error to return.
func relayOutcome(res redirect.Result) (wire.Outcome, bool) {
	switch res.Kind {
	case redirect.KindConnected:
		return wire.OutcomeConnected, true
	case redirect.KindDenied:
		return wire.OutcomeDenied, true
	case redirect.KindFailed, redirect.KindWrongIssuer:
		return wire.OutcomeFailed, true
	}
	return "", false
}

// callbackParamsOf reads a redirect's query, iss included (RFC 9207): the
// engine checks it against the issuer the flow expects.
func callbackParamsOf(q url.Values) engine.CallbackParams {
	return engine.CallbackParams{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"),
		ErrorDescription: q.Get("error_description"), Issuer: q.Get("iss")}
}
