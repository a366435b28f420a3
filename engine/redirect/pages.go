package redirect

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Kind is what a launch or callback came to, as the page tells it. Only
// KindConnected says anything like success.
type Kind string

// The outcomes.
const (
	KindConnected Kind = "connected"
	KindDenied    Kind = "denied"
	// KindWrongIssuer: the redirect's iss (RFC 9207) was not the flow's
	// issuer; the flow ended issuer_mismatch and its code was never used.
	KindWrongIssuer Kind = "wrong_issuer"
	KindFailed      Kind = "failed"
	KindExpired     Kind = "expired"
	KindAlreadyUsed Kind = "already_used"
	KindEnded       Kind = "ended"
	KindInProgress  Kind = "in_progress"
	KindUnknown     Kind = "unknown"
	KindMalformed   Kind = "malformed"
	KindUnavailable Kind = "unavailable"
	KindInternal    Kind = "internal"
	// KindBindingMissing: the flow is bound to the browser that opened its
	// launch link and this callback came without its cookie (another
	// browser, or another user on the machine). Nothing changed.
	KindBindingMissing Kind = "binding_missing"
	// KindBindingMismatch: the callback carried another binding cookie.
	KindBindingMismatch Kind = "binding_mismatch"
	// KindLaunched: a launch link was opened (no page: a redirect).
	KindLaunched Kind = "launched"
	// KindLaunchUsed: the launch link was opened before.
	KindLaunchUsed Kind = "launch_used"
	// KindLaunchUnknown: no launch link has this value, or it expired.
	KindLaunchUnknown Kind = "launch_unknown"
	// KindPrefetch: HEAD or a speculative prefetch; nothing was done.
	KindPrefetch Kind = "prefetch"
)

// Result is what a launch or callback came to.
type Result struct {
	Kind Kind
	// Status is the page's HTTP status.
	Status int
	// Flow is the flow as it stands, when one was found.
	Flow states.Flow
	// Detail says what was wrong with a malformed request.
	Detail string
	// Err is the engine's error, if any.
	Err error
}

// Classify turns what Engine.Callback (or Launch) returned into a Result.
func Classify(f states.Flow, err error) Result {
	res := Result{Flow: f, Err: err, Status: http.StatusOK}
	if err == nil {
		switch {
		case f.State == states.Complete:
			res.Kind = KindConnected
		case f.Reason == states.ProviderDenied:
			res.Kind = KindDenied
		case f.Reason == states.IssuerMismatch:
			res.Kind, res.Status = KindWrongIssuer, http.StatusBadRequest
		default:
			res.Kind, res.Status = KindFailed, http.StatusBadGateway
		}
		return res
	}
	var fe *engine.FlowError
	switch {
	case errors.As(err, &fe):
		res.Flow = fe.Flow
		switch {
		case errors.Is(err, engine.ErrBindingMissing):
			res.Kind, res.Status = KindBindingMissing, http.StatusForbidden
		case errors.Is(err, engine.ErrBindingMismatch):
			res.Kind, res.Status = KindBindingMismatch, http.StatusForbidden
		case errors.Is(err, engine.ErrExpired), fe.Flow.State == states.Expired:
			res.Kind, res.Status = KindExpired, http.StatusGone
		case !fe.Flow.State.Terminal():
			res.Kind, res.Status = KindInProgress, http.StatusConflict
		case fe.Flow.State == states.Complete:
			res.Kind, res.Status = KindAlreadyUsed, http.StatusConflict
		default:
			res.Kind, res.Status = KindEnded, http.StatusConflict
		}
	case errors.Is(err, engine.ErrUnknownState):
		res.Kind, res.Status = KindUnknown, http.StatusNotFound
	case errors.Is(err, engine.ErrLaunchUsed):
		res.Kind, res.Status = KindLaunchUsed, http.StatusConflict
	case errors.Is(err, engine.ErrLaunchUnknown):
		res.Kind, res.Status = KindLaunchUnknown, http.StatusNotFound
	case errors.Is(err, engine.ErrClosed):
		res.Kind, res.Status = KindUnavailable, http.StatusServiceUnavailable
	default:
		res.Kind, res.Status = KindInternal, http.StatusInternalServerError
	}
	return res
}

// Pages writes the page for a result. The handler has set the page
// headers (SetPageHeaders); WritePage writes the status and the body.
type Pages interface {
	WritePage(w http.ResponseWriter, r *http.Request, res Result)
}

// PagesFunc adapts a function to Pages.
type PagesFunc func(w http.ResponseWriter, r *http.Request, res Result)

// WritePage calls f.
func (f PagesFunc) WritePage(w http.ResponseWriter, r *http.Request, res Result) { f(w, r, res) }

// PageData is what TemplatePages executes its template with.
type PageData struct {
	Kind  Kind
	Title string
	Text  string
	// Result is the whole outcome, for templates that say more.
	Result Result
}

// TemplatePages renders every page with one html/template, given PageData.
// Title and Text are the default wording; a template may ignore them.
type TemplatePages struct {
	Template *template.Template
}

// WritePage executes the template.
func (t TemplatePages) WritePage(w http.ResponseWriter, _ *http.Request, res Result) {
	w.WriteHeader(res.Status)
	_ = t.Template.Execute(w, PageData{Kind: res.Kind, Title: Title(res.Kind), Text: Text(res), Result: res})
}

// Default is the package's own page: tiny, no scripts, no external resources.
var Default Pages = TemplatePages{Template: defaultPage}

var defaultPage = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer">
<title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}h1{font-size:1.4em}</style>
</head><body class="{{.Kind}}"><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

var titles = map[Kind]string{
	KindConnected:       "Connected",
	KindDenied:          "Not connected: access denied",
	KindWrongIssuer:     "Not connected: response from the wrong server",
	KindFailed:          "Not connected",
	KindExpired:         "Not connected: link expired",
	KindAlreadyUsed:     "Already used",
	KindEnded:           "Not connected: sign-in already ended",
	KindInProgress:      "Already in progress",
	KindUnknown:         "Unknown sign-in",
	KindMalformed:       "Invalid callback",
	KindUnavailable:     "Unavailable",
	KindInternal:        "Not connected: error",
	KindBindingMissing:  "Refused: not the browser that started this sign-in",
	KindBindingMismatch: "Refused: not the browser that started this sign-in",
	KindLaunchUsed:      "Sign-in link already used",
	KindLaunchUnknown:   "Sign-in link expired",
}

// Title is the default page title of a kind.
func Title(k Kind) string {
	if t, ok := titles[k]; ok {
		return t
	}
	return string(k)
}

// Text is the default sentence for a result. It names no product: an
// embedder's own Pages can add how to start again.
func Text(res Result) string {
	f := res.Flow
	switch res.Kind {
	case KindConnected:
		return fmt.Sprintf("Your %s account is connected. You can close this tab.", f.Provider)
	case KindDenied:
		said := f.ErrorCode
		if f.Message != "" {
			said += ": " + f.Message
		}
		return fmt.Sprintf("%s denied the request (%s). Nothing was stored.", f.Provider, said)
	case KindWrongIssuer:
		return fmt.Sprintf("Not connected: this redirect did not come from %s's authorization server (%s). Its code was not used and nothing was stored.", f.Provider, f.Message)
	case KindFailed:
		msg := fmt.Sprintf("Not connected: %s.", f.Reason.Describe())
		if f.Message != "" {
			msg += " " + f.Message
		}
		if f.ErrorCode != "" {
			msg += " (" + f.ErrorCode + ")"
		}
		return msg + " Nothing was stored."
	case KindExpired:
		return "This sign-in link has expired: " + f.Reason.Describe() + ". This visit was ignored and nothing was stored."
	case KindAlreadyUsed:
		return "This sign-in link was already used: the sign-in it started has finished. This visit was ignored and changed nothing."
	case KindEnded:
		return fmt.Sprintf("This sign-in had already ended (%s). This visit was ignored and nothing was stored.", f.Reason.Describe())
	case KindInProgress:
		return "The code from an earlier visit to this link is being exchanged. This visit was ignored."
	case KindUnknown:
		return "There is no sign-in with this state: the link may be mistyped, very old, or meant for another machine. Nothing changed."
	case KindMalformed:
		return "This is not a valid sign-in callback (" + res.Detail + "). Nothing changed."
	case KindUnavailable:
		return "The service is shutting down and could not take this sign-in. Nothing changed."
	case KindBindingMissing:
		return "This sign-in was started in another browser, and only that browser may finish it. This visit was ignored: nothing changed, and the sign-in is still waiting for its own browser. If you did not start a sign-in, someone else on this computer may be trying to connect their account in your name."
	case KindBindingMismatch:
		return "This browser carries another sign-in's binding, not this one's. This visit was ignored: nothing changed, and the sign-in is still waiting for the browser that started it."
	case KindLaunchUsed:
		return "This one-time sign-in link was already opened. Nothing changed. If you did not open it in another tab, someone else on this computer may have: stop this sign-in and start a new one."
	case KindLaunchUnknown:
		return "This one-time sign-in link has expired or is unknown. Nothing changed. Open the sign-in address printed where you started, or start again."
	}
	return "The outcome of this sign-in could not be recorded. Nothing was stored."
}
