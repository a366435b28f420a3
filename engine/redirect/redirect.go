// Package redirect serves the browser's side of a loopback connect flow as
// an http.Handler an embedder mounts on its loopback listener: the one-time
// launch link (Started.LaunchURL), which binds the flow to the browser that
// opens it with a cookie and sends it on to the provider, and the
// provider's redirect (the callback), which it hands to the engine with
// that cookie.
//
// What it guards so every embedder need not: a request with neither a code
// nor an error (a prefetch, a mangled URL) changes nothing; a launch link
// works once; HEAD and speculative prefetches never spend a launch link; a
// bound flow refuses a callback without its cookie (the engine records it
// as callback_ignored and the flow keeps waiting). Pages are replaceable
// through Pages, or through a template with TemplatePages.
//
// It depends only on the standard library, engine and states.
package redirect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Engine is what the handler needs of *engine.Engine.
type Engine interface {
	Launch(ctx context.Context, token string) (engine.Launched, error)
	Callback(ctx context.Context, p engine.CallbackParams) (states.Flow, error)
}

var _ Engine = (*engine.Engine)(nil)

// Bounds on a callback's parameters; a provider never sends more.
const (
	MaxStateLen            = 256
	MaxCodeLen             = 4096
	MaxErrorLen            = 256
	MaxErrorDescriptionLen = 2048
	MaxIssuerLen           = 2048
)

// CookiePrefix starts the name of every flow's binding cookie. Each flow
// has its own cookie, so two connects in one browser do not overwrite
// each other's binding.
const CookiePrefix = "flow_binding_"

// CookieName is the name of the binding cookie of the flow with this
// state: a hash of the state, so the name alone does not carry it.
func CookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return CookiePrefix + hex.EncodeToString(sum[:12])
}

// Handler serves the launch link and the callback. Its zero value is not
// usable: set Engine.
type Handler struct {
	// Engine runs the flows (required).
	Engine Engine
	// Pages writes the browser's page for every outcome. Default: Default.
	Pages Pages
	// CallbackPath is where the provider redirects to, and the binding
	// cookie's Path. Default engine.CallbackPath.
	CallbackPath string
	// LaunchPath is where launch links point. Default engine.LaunchPath.
	LaunchPath string
	// Observe, if set, is called with every outcome (for logs and
	// metrics). It must not block and never sees the code or the cookie.
	Observe func(r *http.Request, res Result)
}

func (h *Handler) callbackPath() string {
	if h.CallbackPath != "" {
		return h.CallbackPath
	}
	return engine.CallbackPath
}

func (h *Handler) launchPath() string {
	if h.LaunchPath != "" {
		return h.LaunchPath
	}
	return engine.LaunchPath
}

// ServeHTTP routes by path: GET LaunchPath to ServeLaunch, GET
// CallbackPath to ServeCallback, OPTIONS CallbackPath to ServePreflight.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == h.launchPath() && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.ServeLaunch(w, r)
	case r.URL.Path == h.callbackPath() && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.ServeCallback(w, r)
	case r.URL.Path == h.callbackPath() && r.Method == http.MethodOptions:
		h.ServePreflight(w, r)
	case r.URL.Path == h.callbackPath() || r.URL.Path == h.launchPath():
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	default:
		http.NotFound(w, r)
	}
}

// prefetch reports whether the request is not the user's own navigation:
// HEAD, or a speculative prefetch or prerender (Sec-Purpose, Purpose).
func prefetch(r *http.Request) bool {
	return r.Method == http.MethodHead || r.Header.Get("Sec-Purpose") != "" || r.Header.Get("Purpose") == "prefetch" ||
		r.Header.Get("X-Moz") == "prefetch"
}

// ServeLaunch opens a launch link: it sets the flow's binding cookie and
// redirects (303) to the provider's authorization URL.
func (h *Handler) ServeLaunch(w http.ResponseWriter, r *http.Request) {
	if prefetch(r) {
		// Spending the link on a prefetch would leave the real visit
		// with "already used".
		h.finish(w, r, Result{Kind: KindPrefetch, Status: http.StatusNoContent})
		return
	}
	token := r.URL.Query().Get(engine.LaunchParam)
	if token == "" || len(token) > MaxStateLen {
		h.finish(w, r, Result{Kind: KindLaunchUnknown, Status: http.StatusNotFound, Detail: "the link has no launch value"})
		return
	}
	l, err := h.Engine.Launch(context.WithoutCancel(r.Context()), token)
	if err != nil {
		res := Classify(states.Flow{}, err)
		switch {
		case errors.Is(err, engine.ErrLaunchUsed):
			res.Kind, res.Status = KindLaunchUsed, http.StatusConflict
		case errors.Is(err, engine.ErrLaunchUnknown):
			res.Kind, res.Status = KindLaunchUnknown, http.StatusNotFound
		}
		h.finish(w, r, res)
		return
	}
	maxAge := int(time.Until(l.Deadline).Seconds()) + 60
	if maxAge < 60 {
		maxAge = 60
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName(l.State), Value: l.Binding, Path: h.callbackPath(), MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Location", l.AuthURL)
	w.WriteHeader(http.StatusSeeOther)
	if h.Observe != nil {
		h.Observe(r, Result{Kind: KindLaunched, Status: http.StatusSeeOther, Flow: states.Flow{ID: l.State}})
	}
}

// ServeCallback hands the provider's redirect to the engine, with the
// flow's binding cookie, and writes the page that says what came of it.
func (h *Handler) ServeCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// iss (RFC 9207) goes to the engine, which checks it against the
	// issuer the flow expects.
	p := engine.CallbackParams{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"),
		ErrorDescription: q.Get("error_description"), Issuer: q.Get("iss")}
	if msg := CheckParams(p); msg != "" {
		h.finish(w, r, Result{Kind: KindMalformed, Status: http.StatusBadRequest, Detail: msg})
		return
	}
	if prefetch(r) {
		h.finish(w, r, Result{Kind: KindPrefetch, Status: http.StatusNoContent})
		return
	}
	name := CookieName(p.State)
	if c, err := r.Cookie(name); err == nil {
		p.Binding = c.Value
	}
	// Without the request's cancellation: once a code is being exchanged,
	// a browser closing its tab must not cut the exchange.
	f, err := h.Engine.Callback(context.WithoutCancel(r.Context()), p)
	res := Classify(f, err)
	if (err == nil && f.State.Terminal()) || res.Kind == KindAlreadyUsed || res.Kind == KindEnded || res.Kind == KindExpired {
		// The flow is over: its binding has nothing left to guard.
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: h.callbackPath(), MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	h.finish(w, r, res)
}

// ServePreflight answers a CORS or Private Network Access preflight for
// the callback. It touches no flow: a preflight is not a callback.
func (h *Handler) ServePreflight(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Allow", "GET, OPTIONS")
	if origin := r.Header.Get("Origin"); origin != "" {
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Methods", "GET")
		hdr.Set("Access-Control-Max-Age", "600")
		hdr.Add("Vary", "Origin")
	}
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		hdr.Set("Access-Control-Allow-Private-Network", "true")
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) finish(w http.ResponseWriter, r *http.Request, res Result) {
	if h.Observe != nil {
		h.Observe(r, res)
	}
	if res.Kind == KindPrefetch {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(res.Status)
		return
	}
	pages := h.Pages
	if pages == nil {
		pages = Default
	}
	SetPageHeaders(w)
	pages.WritePage(w, r, res)
}

// SetPageHeaders sets the headers every page of the flow should carry: no
// caching, no referrer (the callback's URL carries the code), no framing,
// no scripts.
func SetPageHeaders(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
}

// CheckParams bounds a callback before it reaches any flow. It returns ""
// if the parameters may be delivered, else what is wrong with them.
func CheckParams(p engine.CallbackParams) string {
	switch {
	case p.State == "":
		return "the callback has no state; it did not come from a sign-in link"
	case len(p.State) > MaxStateLen:
		return fmt.Sprintf("the state is over %d bytes; no flow has such a state", MaxStateLen)
	case p.Code == "" && p.Error == "":
		// Refused before it reaches the flow: a mangled or prefetched
		// redirect must not end a sign-in the real redirect can still finish.
		return "the callback has neither a code nor an error; use the whole address the provider redirected the browser to"
	case len(p.Code) > MaxCodeLen:
		return fmt.Sprintf("the code is over %d bytes", MaxCodeLen)
	case len(p.Error) > MaxErrorLen:
		return fmt.Sprintf("the error parameter is over %d bytes", MaxErrorLen)
	case len(p.ErrorDescription) > MaxErrorDescriptionLen:
		return fmt.Sprintf("error_description is over %d bytes", MaxErrorDescriptionLen)
	case len(p.Issuer) > MaxIssuerLen:
		return fmt.Sprintf("iss is over %d bytes", MaxIssuerLen)
	}
	return ""
}
