package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/states"
)

// fakeFlowd fakes flowd's API with the wire types on a real unix socket,
// so the real client and command tree run against it. It keeps flows in
// memory and records what flowctl asked.
type fakeFlowd struct {
	t      *testing.T
	socket string
	srv    *httptest.Server

	mu        sync.Mutex
	flows     map[string]*wire.Flow
	order     []string // creation order
	history   map[string][]states.Record
	seq       uint64
	starts    []wire.StartRequest
	cancels   []string
	callbacks []wire.CallbackRequest
	lists     []string // raw queries of list calls
	statusQs  []string // raw queries of status calls
	providers []wire.Provider
	tokens    map[string]wire.TokenResponse
	tokenQs   []string // raw queries of token calls
	removed   []string
	changed   chan struct{} // closed and replaced on every change
	nextState string        // the state the next start gets

	// onStart, when set, runs after a flow is started (still unlocked).
	onStart func(st wire.StartResponse)
	// shapeFlow, when set, changes a new flow before its start is answered
	// (with f.mu held), so the client never sees it otherwise.
	shapeFlow func(fl *wire.Flow)
	// onCallback decides a pasted callback's outcome; default: code completes
	// the flow, error denies it.
	onCallback func(req wire.CallbackRequest) (wire.Flow, *wire.Error, int)
}

func newFakeFlowd(t *testing.T) *fakeFlowd {
	t.Helper()
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	f := &fakeFlowd{
		t:       t,
		socket:  sock,
		flows:   map[string]*wire.Flow{},
		history: map[string][]states.Record{},
		tokens:  map[string]wire.TokenResponse{},
		changed: make(chan struct{}),
		providers: []wire.Provider{
			{Name: "github", Preset: "github", AuthURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token", ClientID: "Iv1.abc", Scopes: []string{"repo", "read:user"}, AuthMethod: "client_secret_post", AuthMethodFrom: "preset"},
			{Name: "google", Preset: "google", AuthURL: "https://accounts.google.com/o/oauth2/v2/auth", TokenURL: "https://oauth2.googleapis.com/token", ClientID: "123.apps", Scopes: []string{"openid", "email"}, AuthMethod: "client_secret_post", AuthMethodFrom: "preset", Issuer: "https://accounts.google.com", IssuerRequired: true},
		},
	}
	mux := http.NewServeMux()
	handlers := map[string]http.HandlerFunc{
		wire.RouteStart:      f.handleStart,
		wire.RouteList:       f.handleList,
		wire.RouteStatus:     f.handleStatus,
		wire.RouteCancel:     f.handleCancel,
		wire.RouteHistory:    f.handleHistory,
		wire.RouteExport:     f.handleExport,
		wire.RouteCallback:   f.handleCallback,
		wire.RouteProviders:  f.handleProviders,
		wire.RouteToken:      f.handleToken,
		wire.RouteDisconnect: f.handleDisconnect,
		wire.RouteHealth: func(w http.ResponseWriter, r *http.Request) {
			writeJSONResp(w, 200, wire.HealthResponse{Status: "ok"})
		},
	}
	for _, r := range wire.Routes {
		if h, ok := handlers[r.Name]; ok {
			mux.HandleFunc(r.Method+" "+r.Pattern, h)
		}
	}
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Listener.Close()
	f.srv.Listener = ln
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func writeJSONResp(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSONResp(w, status, wire.Error{Err: wire.ErrorBody{Code: code, Message: msg}})
}

// decodeStrict reads a request body as flowd does, refusing unknown
// fields, and answers 400 bad_request when it cannot.
func decodeStrict[T any](w http.ResponseWriter, r *http.Request) (T, bool) {
	var v T
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		writeErr(w, 400, wire.CodeBadRequest, err.Error())
		return v, false
	}
	return v, true
}

// notify wakes long polls; callers hold mu.
func (f *fakeFlowd) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeFlowd) append(state string, ev states.Event, from, to states.State, d states.Data) {
	f.seq++
	h := f.history[state]
	f.history[state] = append(h, states.Record{
		Version: states.SchemaVersion, Seq: f.seq, Flow: state, FlowSeq: uint64(len(h) + 1),
		Event: ev, From: from, To: to, Time: time.Now().UTC(), Data: d,
	})
}

// addFlow creates a flow awaiting its callback, with a consistent history.
func (f *fakeFlowd) addFlow(state, provider string, transport states.Transport, ttl time.Duration) wire.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().UTC()
	deadline := now.Add(ttl)
	f.append(state, states.Created, "", states.Pending, states.Data{Provider: provider, Transport: transport, RedirectURI: "http://127.0.0.1:8085/oauth/callback", Scopes: []string{"repo"}, Deadline: &deadline})
	f.append(state, states.URLIssued, states.Pending, states.AwaitingCallback, states.Data{})
	fl := &wire.Flow{State: state, Status: string(states.AwaitingCallback), Provider: provider, Transport: string(transport),
		RedirectURI: "http://127.0.0.1:8085/oauth/callback", Scopes: []string{"repo"}, CreatedAt: now, ExpiresAt: deadline}
	f.flows[state] = fl
	f.order = append(f.order, state)
	f.notify()
	return *fl
}

// finish ends a flow the way the engine would, with its records.
func (f *fakeFlowd) finish(state string, reason states.Reason, d states.Data) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.flows[state]
	require.NotNil(f.t, fl, "finish unknown flow %s", state)
	from := states.State(fl.Status)
	d.Reason = reason
	var to states.State
	switch reason {
	case states.Exchanged:
		f.append(state, states.ExchangeStarted, from, from, states.Data{CodeFingerprint: "fp:1a2b"})
		to = states.Complete
		d.TokenStored = true
		f.append(state, states.ExchangeSucceeded, from, to, d)
		fl.TokenStored = true
		fl.GrantedScopes = d.GrantedScopes
		if d.Account != "" {
			fl.Account, fl.Subject, fl.Email = d.Account, d.Subject, d.Email
		}
	case states.DeadlineExpired, states.ExpiredWhileDown:
		to = states.Expired
		f.append(state, states.DeadlinePassed, from, to, d)
	case states.ExchangeFailed:
		f.append(state, states.ExchangeStarted, from, from, states.Data{CodeFingerprint: "fp:1a2b"})
		to = states.Error
		f.append(state, states.Failed, from, to, d)
	default:
		to = states.Error
		f.append(state, states.Failed, from, to, d)
	}
	now := time.Now().UTC()
	fl.Status, fl.Terminal, fl.Reason, fl.ReasonText = string(to), true, string(reason), reason.Describe()
	fl.Message, fl.ErrorCode, fl.HTTPStatus, fl.EndedAt = d.Message, d.ErrorCode, d.HTTPStatus, &now
	f.notify()
}

func (f *fakeFlowd) flow(state string) wire.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.flows[state]
}

func (f *fakeFlowd) snapshot() (starts []wire.StartRequest, cancels []string, callbacks []wire.CallbackRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts), slices.Clone(f.cancels), slices.Clone(f.callbacks)
}

func (f *fakeFlowd) handleStart(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeStrict[wire.StartRequest](w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	f.starts = append(f.starts, req)
	known := false
	for _, p := range f.providers {
		known = known || p.Name == req.Provider
	}
	state := f.nextState
	if state == "" {
		state = fmt.Sprintf("st%030d", len(f.starts))
	}
	f.nextState = ""
	f.mu.Unlock()
	if !known {
		writeErr(w, 404, wire.CodeUnknownProvider, fmt.Sprintf("unknown provider %q; known providers: github, google", req.Provider))
		return
	}
	ttl := 5 * time.Minute
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeErr(w, 400, wire.CodeBadRequest, "bad ttl")
			return
		}
		ttl = d
	}
	tr := states.Transport(req.Transport)
	if tr == "" {
		tr = states.Loopback
	}
	if tr == states.Device {
		f.mu.Lock()
		device := ""
		for _, p := range f.providers {
			if p.Name == req.Provider {
				device = p.DeviceAuthURL
			}
		}
		f.mu.Unlock()
		if device == "" {
			writeErr(w, 400, wire.CodeDeviceNotSupported, "provider has no device authorization endpoint")
			return
		}
		fl := f.addFlow(state, req.Provider, tr, ttl)
		f.mu.Lock()
		f.flows[state].RedirectURI = ""
		f.flows[state].VerificationURI = fakeVerificationURI
		f.flows[state].PollInterval = 5
		f.flows[state].UserCode = fakeUserCode
		f.mu.Unlock()
		st := wire.StartResponse{State: state, Provider: req.Provider, Transport: string(tr), ExpiresAt: fl.ExpiresAt,
			UserCode: fakeUserCode, VerificationURI: fakeVerificationURI, PollInterval: 5}
		writeJSONResp(w, 201, st)
		if f.onStart != nil {
			go f.onStart(st)
		}
		return
	}
	fl := f.addFlow(state, req.Provider, tr, ttl)
	if f.shapeFlow != nil {
		f.mu.Lock()
		f.shapeFlow(f.flows[state])
		f.mu.Unlock()
	}
	st := wire.StartResponse{State: state, Provider: req.Provider, Transport: string(tr),
		AuthURL:     "https://provider.example/authorize?client_id=x&state=" + state,
		RedirectURI: fl.RedirectURI, ExpiresAt: fl.ExpiresAt,
		LaunchURL: "http://127.0.0.1:8085/oauth/launch?t=opaque-" + strconv.Itoa(len(f.order))}
	writeJSONResp(w, 201, st)
	if f.onStart != nil {
		go f.onStart(st)
	}
}

func (f *fakeFlowd) lookup(w http.ResponseWriter, r *http.Request) (*wire.Flow, bool) {
	state := r.PathValue("state")
	fl, ok := f.flows[state]
	if !ok {
		writeErr(w, 404, wire.CodeUnknownState, "no flow has this state; list flows with: flowctl list")
	}
	return fl, ok
}

func (f *fakeFlowd) handleStatus(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.statusQs = append(f.statusQs, r.URL.RawQuery)
	fl, ok := f.lookup(w, r)
	if !ok {
		f.mu.Unlock()
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.mu.Unlock()
			writeErr(w, 400, wire.CodeBadRequest, "bad wait")
			return
		}
		wait = d
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !fl.Terminal && wait > 0 {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			wait = 0
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	out := *fl
	f.mu.Unlock()
	writeJSONResp(w, 200, out)
}

func (f *fakeFlowd) handleCancel(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.cancels = append(f.cancels, r.PathValue("state"))
	fl, ok := f.lookup(w, r)
	if !ok {
		f.mu.Unlock()
		return
	}
	if fl.Terminal {
		f.mu.Unlock()
		writeErr(w, 404, wire.CodeFlowFinished, "flow has already ended; start a new one with: flowctl connect "+fl.Provider)
		return
	}
	state := fl.State
	f.mu.Unlock()
	f.finish(state, states.Canceled, states.Data{})
	writeJSONResp(w, 200, f.flow(state))
}

func (f *fakeFlowd) handleHistory(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.lookup(w, r); !ok {
		return
	}
	state := r.PathValue("state")
	writeJSONResp(w, 200, wire.HistoryResponse{State: state, Records: f.history[state]})
}

// handleExport mirrors flowd's export: global order, one flow on request,
// and with since every flow touched since then, whole.
func (f *fakeFlowd) handleExport(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeErr(w, 400, wire.CodeBadRequest, "bad since")
			return
		}
		since = t
	}
	var recs []states.Record
	for state, h := range f.history {
		if flow := r.URL.Query().Get("flow"); flow != "" && flow != state {
			continue
		}
		if !since.IsZero() && h[len(h)-1].Time.Before(since) {
			continue
		}
		recs = append(recs, h...)
	}
	slices.SortFunc(recs, func(a, b states.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	w.Header().Set("Content-Type", "application/x-ndjson")
	for _, rec := range recs {
		b, _ := rec.Encode()
		w.Write(append(b, '\n'))
	}
}

func (f *fakeFlowd) handleList(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, r.URL.RawQuery)
	var want []string
	if v := r.URL.Query().Get("status"); v != "" {
		want = strings.Split(v, ",")
	}
	prov := r.URL.Query().Get("provider")
	out := wire.ListResponse{Flows: []wire.Flow{}}
	for i := len(f.order) - 1; i >= 0; i-- {
		fl := f.flows[f.order[i]]
		if (len(want) == 0 || slices.Contains(want, fl.Status)) && (prov == "" || fl.Provider == prov) {
			out.Flows = append(out.Flows, *fl)
		}
	}
	writeJSONResp(w, 200, out)
}

func (f *fakeFlowd) handleCallback(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeStrict[wire.CallbackRequest](w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	f.callbacks = append(f.callbacks, req)
	fl, ok := f.flows[req.State]
	hook := f.onCallback
	f.mu.Unlock()
	if hook != nil {
		fl, werr, status := hook(req)
		if werr != nil {
			writeJSONResp(w, status, werr)
			return
		}
		writeJSONResp(w, 200, wire.CallbackResponse{Outcome: wire.OutcomeConnected, Flow: fl})
		return
	}
	if !ok {
		writeErr(w, 404, wire.CodeUnknownState, "no flow has this state")
		return
	}
	if fl.Terminal {
		writeErr(w, 404, wire.CodeFlowFinished, "flow has already ended")
		return
	}
	outcome := wire.OutcomeConnected
	if req.Error != "" {
		f.finish(req.State, states.ProviderDenied, states.Data{ErrorCode: req.Error, Message: req.ErrorDescription})
		outcome = wire.OutcomeDenied
	} else {
		f.finish(req.State, states.Exchanged, states.Data{GrantedScopes: []string{"repo"}})
	}
	writeJSONResp(w, 200, wire.CallbackResponse{Outcome: outcome, Flow: f.flow(req.State)})
}

func (f *fakeFlowd) handleProviders(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSONResp(w, 200, wire.ProvidersResponse{Providers: f.providers})
}

// handleToken answers tokens keyed "provider" (no account name) or
// "provider/account", picking the only account as flowd does when the
// request names none.
func (f *fakeFlowd) handleToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, account := r.PathValue("provider"), r.URL.Query().Get("account")
	f.tokenQs = append(f.tokenQs, r.URL.RawQuery)
	key := p
	if account != "" {
		key = p + "/" + account
	} else if _, ok := f.tokens[p]; !ok {
		var accounts []string
		for k := range f.tokens {
			if a, ok := strings.CutPrefix(k, p+"/"); ok {
				accounts = append(accounts, a)
			}
		}
		slices.Sort(accounts)
		if len(accounts) > 1 {
			writeErr(w, 409, wire.CodeAccountRequired, p+" has "+fmt.Sprint(len(accounts))+" connected accounts ("+strings.Join(accounts, ", ")+"); name one; pick one with --account")
			return
		}
		if len(accounts) == 1 {
			key = p + "/" + accounts[0]
		}
	}
	tok, ok := f.tokens[key]
	if !ok {
		writeErr(w, 404, wire.CodeNotConnected, "no token stored; connect first: flowctl connect <provider>")
		return
	}
	writeJSONResp(w, 200, tok)
}

func (f *fakeFlowd) handleDisconnect(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.PathValue("provider")
	delete(f.tokens, p)
	f.removed = append(f.removed, p)
	writeJSONResp(w, 200, wire.DisconnectResponse{Provider: p, Removed: true})
}

// fakeBrowser records URLs and never opens anything.
type fakeBrowser struct {
	mu     sync.Mutex
	opened []string
	err    error
	onOpen func(url string)
}

func (b *fakeBrowser) Open(u string) error {
	b.mu.Lock()
	b.opened = append(b.opened, u)
	hook, err := b.onOpen, b.err
	b.mu.Unlock()
	if hook != nil {
		hook(u)
	}
	return err
}

func (b *fakeBrowser) urls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.opened)
}

// cli is one flowctl invocation's world.
type cli struct {
	d *deps
	// stdout and stderr are locked: the countdown's goroutine writes too.
	stdout  *syncbuf.Buffer
	stderr  *syncbuf.Buffer
	browser *fakeBrowser
	env     map[string]string
}

// newCLI returns a world with a graphical display, no terminal, a fake
// browser and short waits.
func newCLI(stdin string) *cli {
	c := &cli{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, browser: &fakeBrowser{},
		env: map[string]string{"DISPLAY": ":0"}}
	c.d = &deps{
		stdin:         strings.NewReader(stdin),
		stdout:        c.stdout,
		stderr:        c.stderr,
		getenv:        func(k string) string { return c.env[k] },
		goos:          "linux",
		browser:       c.browser,
		isTerminal:    func(io.Writer) bool { return false },
		now:           time.Now,
		pollWait:      2 * time.Second,
		tick:          20 * time.Millisecond,
		retryEvery:    20 * time.Millisecond,
		cancelTimeout: 5 * time.Second,
		deadlineGrace: 2 * time.Second,
		environ: func() []string {
			var out []string
			for k, v := range c.env {
				out = append(out, k+"="+v)
			}
			return append(out, "PATH="+os.Getenv("PATH"))
		},
	}
	return c
}

// run runs flowctl with args against socket (none when empty) and returns the exit code.
func (c *cli) run(ctx context.Context, socket string, args ...string) int {
	if socket != "" {
		args = append([]string{"--socket", socket}, args...)
	}
	return runWith(ctx, args, c.d)
}

// oneJSON decodes stdout as exactly one JSON object.
func oneJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var m map[string]any
	require.NoError(t, dec.Decode(&m), "stdout is not a JSON object: %q", out)
	var extra any
	require.Error(t, dec.Decode(&extra), "stdout has more than one JSON value: %q", out)
	return m
}

// restartFake serves old's API again on its socket, with its flows:
// flowd restarted and recovered its log.
func restartFake(t *testing.T, old *fakeFlowd) *fakeFlowd {
	t.Helper()
	ln, err := net.Listen("unix", old.socket)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(old.srv.Config.Handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	old.srv = srv
	return old
}
