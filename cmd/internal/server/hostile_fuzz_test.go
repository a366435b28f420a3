package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// hostileServer is a server on a memlog engine whose token endpoint
// refuses every code at once, so fuzzed callbacks that reach an exchange
// end quickly and spend nothing.
type hostileServer struct {
	s   *Server
	eng *engine.Engine
	log *memlog.Log
}

func newHostileServer(f *testing.F) *hostileServer {
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
	}))
	f.Cleanup(tokenSrv.Close)
	l := memlog.New()
	eng, err := engine.Open(context.Background(), engine.Config{Log: l, Retention: -1, PublicBaseURL: "https://gw.example.test",
		Providers: []engine.Provider{{Name: "fake", AuthURL: "https://auth.example.test/a", TokenURL: tokenSrv.URL + "/token",
			AuthMethod: engine.AuthMethodNone, ClientID: "cid"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = eng.Close() })
	s, err := New(Config{Engine: eng, ServiceToken: serviceTok})
	if err != nil {
		f.Fatal(err)
	}
	return &hostileServer{s: s, eng: eng, log: l}
}

// snapshot is the whole log, and every flow folded from it minus the count
// of ignored callbacks (a callback for an ended flow is recorded, by
// design, and changes nothing).
func (h *hostileServer) snapshot(t *testing.T) (records int, flows map[string]states.Flow) {
	var recs []states.Record
	if err := h.log.Scan(context.Background(), 0, func(r states.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	flows, err := states.Replay(recs, nil)
	if err != nil {
		t.Fatalf("the log no longer replays: %v", err)
	}
	for id, f := range flows {
		f.IgnoredCallbacks, f.LastSeq = 0, 0
		flows[id] = f
	}
	return len(recs), flows
}

func (h *hostileServer) start(t *testing.T) string {
	st, err := h.eng.Start(context.Background(), engine.StartRequest{Provider: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	return st.ID
}

// refusals that must leave the log exactly as it was: the request never
// reached a flow.
var untouchedCodes = map[string]bool{
	wire.CodeBadRequest: true, wire.CodeTooLarge: true, wire.CodeUnauthorized: true, wire.CodeForbidden: true,
	wire.CodeNotFound: true, wire.CodeMethodNotAllowed: true, wire.CodeUnknownProvider: true,
	wire.CodeUnknownState: true, wire.CodeUnknownTransport: true, wire.CodeGatewayNotConfigured: true,
}

// checkRejection asserts what every refusal must be: a 4xx, in the one
// error shape with a code and a sentence (or, for the browser callback, a
// page), and no flow changed; the log is untouched unless the refusal is
// one of the documented "callback recorded as ignored" outcomes.
func (h *hostileServer) checkRejection(t *testing.T, what string, w *httptest.ResponseRecorder, page bool, beforeN int, before map[string]states.Flow) {
	if w.Code == http.StatusBadGateway && page && strings.Contains(w.Body.String(), "refused to exchange") {
		return // accepted: the code went to the provider, which refused it (an upstream failure)
	}
	if w.Code >= 500 {
		t.Fatalf("%s: status %d: %s", what, w.Code, w.Body)
	}
	if w.Code < 400 {
		return // accepted: it may change a flow
	}
	afterN, after := h.snapshot(t)
	for id, f := range before {
		if a, ok := after[id]; !ok || a.State != f.State || a.Reason != f.Reason || a.Exchanging != f.Exchanging {
			t.Fatalf("%s: refused with %d, yet flow %s went from %s(%s) to %s(%s)", what, w.Code, states.ShortID(id), f.State, f.Reason, a.State, a.Reason)
		}
	}
	if len(after) != len(before) {
		t.Fatalf("%s: refused with %d, yet a flow appeared", what, w.Code)
	}
	if page && strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		if !strings.Contains(w.Body.String(), "<h1>") {
			t.Fatalf("%s: refused with %d and no page: %q", what, w.Code, w.Body)
		}
		if w.Code == http.StatusBadRequest && afterN != beforeN {
			t.Fatalf("%s: malformed callback refused, yet %d records were appended", what, afterN-beforeN)
		}
		return
	}
	var e wire.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Err.Code == "" || len(e.Err.Message) < 10 {
		t.Fatalf("%s: refused with %d without a clear error: %q", what, w.Code, w.Body)
	}
	if untouchedCodes[e.Err.Code] && afterN != beforeN {
		t.Fatalf("%s: refused as %s, yet %d records were appended", what, e.Err.Code, afterN-beforeN)
	}
}

// FuzzCallbackQuery fuzzes the browser callback's query and its Cookie
// header. The literal STATE in the input is replaced by a live flow's
// state, so inputs reach real flows: state, code, error and
// error_description in any number, order, encoding and size. With bound,
// the flow's launch link was opened first, and in the cookie NAME and
// BINDING stand for its binding cookie's name and value. No panic, no 5xx;
// a refusal is a 4xx page and changes no flow; a malformed one writes
// nothing at all; and a bound flow takes no callback that lacks its exact
// binding.
func FuzzCallbackQuery(f *testing.F) {
	h := newHostileServer(f)
	for _, seed := range []string{
		"state=STATE&code=abc", "state=STATE&error=access_denied&error_description=no", "state=STATE",
		"state=STATE&state=other&code=x", "code=x", "state=&code=x", "state=STATE%00&code=x", "state=%zz",
		"state=STATE&code=" + strings.Repeat("A", wire.MaxCodeLen+1), "state=" + strings.Repeat("s", wire.MaxStateLen+1),
		"state=STATE&error=" + strings.Repeat("e", 300), "state=STATE&code=x;error=y", "state=STATE&code=%E2%80%AE",
		";;;&&&===", "state=STATE&code=x&" + strings.Repeat("z=1&", 3000),
	} {
		f.Add(seed, false, "")
		f.Add(seed, true, "")
	}
	for _, cookie := range []string{"NAME=BINDING", "NAME=BINDINGx", "NAME=", "NAME=xBINDING", "NAME=BINDING; NAME=other",
		"NAME=other; NAME=BINDING", "flow_binding_00=BINDING", "NAME=\"BINDING\"", "NAME=BIND", ";;NAME==BINDING;"} {
		f.Add("state=STATE&code=abc", true, cookie)
		f.Add("state=STATE&error=access_denied", true, cookie)
	}
	f.Fuzz(func(t *testing.T, q string, bound bool, cookie string) {
		st, err := h.eng.Start(context.Background(), engine.StartRequest{Provider: "fake", Launch: true})
		if err != nil {
			t.Fatal(err)
		}
		binding := ""
		if bound {
			u, _ := url.Parse(st.LaunchURL)
			l, err := h.eng.Launch(context.Background(), u.Query().Get(engine.LaunchParam))
			if err != nil {
				t.Fatal(err)
			}
			binding = l.Binding
		}
		q = strings.ReplaceAll(q, "STATE", st.ID)
		cookie = strings.ReplaceAll(strings.ReplaceAll(cookie, "NAME", redirect.CookieName(st.ID)), "BINDING", binding)
		beforeN, before := h.snapshot(t)
		r := httptest.NewRequest("GET", "/oauth/callback", nil)
		r.URL.RawQuery = q
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		w := serveAs(h.s, connInfo{}, r)
		if bound {
			var sent string
			if c, err := r.Cookie(redirect.CookieName(st.ID)); err == nil {
				sent = c.Value
			}
			if sent != binding && w.Code < 400 {
				t.Fatalf("a bound flow took a callback without its binding (cookie %q): %d", clip(cookie, 100), w.Code)
			}
		}
		h.checkRejection(t, "GET /oauth/callback?"+clip(q, 200)+" Cookie: "+clip(cookie, 100), w, true, beforeN, before)
		_, _ = h.eng.Cancel(context.Background(), st.ID)
	})
}

// FuzzAPIRequest fuzzes every API request a local client can send: the
// route (by index into wire.Routes), the path's wildcard, the query and
// the body. STATE in the wildcard, query or body is replaced by a live
// flow's state. No panic, no 5xx; every refusal is a 4xx in the error
// shape with a clear message and changes no flow.
func FuzzAPIRequest(f *testing.F) {
	h := newHostileServer(f)
	for i, rt := range wire.Routes {
		f.Add(uint8(i), "STATE", "", "")
		if rt.Method == "POST" {
			f.Add(uint8(i), "STATE", "", `{"provider":"fake","ttl":"90s","scopes":["a","b"],"transport":"gateway"}`)
			f.Add(uint8(i), "STATE", "", `{"state":"STATE","code":"c"}`)
			f.Add(uint8(i), "STATE", "", `{"url":"http://127.0.0.1/oauth/callback?state=STATE&error=access_denied"}`)
			f.Add(uint8(i), "STATE", "", `{"provider":"fake","ttl":"-1h","transport":"pigeon","account":"`+strings.Repeat("p", 300)+`"}`)
			f.Add(uint8(i), "STATE", "", `{"provider":"fake"}{"provider":"fake"}`)
			f.Add(uint8(i), "STATE", "", `{"provider":"fake","unknown":1}`)
			f.Add(uint8(i), "STATE", "", "[]")
		}
	}
	f.Add(uint8(2), "STATE", "wait=-5s", "")
	f.Add(uint8(2), "STATE", "wait=1ns", "")
	f.Add(uint8(1), "", "status=pending,bogus&provider=fake", "")
	f.Add(uint8(1), "", "status="+strings.Repeat("x", wire.MaxQueryBytes), "")
	f.Add(uint8(3), "..%2f..%2fetc", "", "")
	local := connInfo{unix: true, uid: os.Getuid()}
	f.Fuzz(func(t *testing.T, route uint8, arg, query, body string) {
		rt := wire.Routes[int(route)%len(wire.Routes)]
		if rt.Name == wire.RouteStatus && strings.Contains(query, "wait") {
			query = "" // a long-poll of a live flow waits by design
		}
		st := h.start(t)
		arg = strings.ReplaceAll(arg, "STATE", st)
		query = strings.ReplaceAll(query, "STATE", st)
		body = strings.ReplaceAll(body, "STATE", st)
		path := rt.Path(arg, arg)
		beforeN, before := h.snapshot(t)
		var rd *bytes.Reader
		if body != "" || rt.Method == "POST" {
			rd = bytes.NewReader([]byte(body))
		}
		var r *http.Request
		if rd != nil {
			r = httptest.NewRequest(rt.Method, "/", rd)
		} else {
			r = httptest.NewRequest(rt.Method, "/", nil)
		}
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = path, "", query
		r.RequestURI = ""
		w := serveAs(h.s, local, r)
		page := rt.Name == wire.RouteBrowserCallback || rt.Name == wire.RoutePreflight || rt.Name == wire.RouteLaunch
		if rt.Name == wire.RouteMetrics && w.Code == http.StatusNotFound {
			return // metrics are not enabled in this server
		}
		h.checkRejection(t, rt.Method+" "+clip(path, 100)+"?"+clip(query, 100)+" "+clip(body, 200), w, page, beforeN, before)
		_, _ = h.eng.Cancel(context.Background(), st)
	})
}
