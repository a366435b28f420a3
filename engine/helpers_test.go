package engine_test

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// Known secrets, the fake provider's defaults. They are distinctive so a
// byte scan of a database file, a log buffer or an error string finds
// them if they leak.
const (
	clientID     = oauthtest.DefaultClientID
	clientSecret = oauthtest.DefaultClientSecret
	// codePrefix starts every authorization code the fake provider issues.
	codePrefix = oauthtest.CodePrefix
)

// epoch is where the fake clock starts. Only durations from it are asserted.
var epoch = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// testingT is what both *testing.T and *rapid.T offer.
type testingT interface {
	require.TestingT
	Helper()
}

// providerConfig is the engine's view of p under name.
func providerConfig(p *oauthtest.Server, name string) engine.Provider {
	return engine.Provider{
		Name: name, AuthURL: p.AuthURL, TokenURL: p.TokenURL,
		AuthMethod: engine.AuthMethod(p.AuthMethod), ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: []string{"repo", "read:user"},
	}
}

// harness is an engine on a fake clock and an in-memory log, with one
// fake provider named "gh".
type harness struct {
	t    *testing.T
	ctx  context.Context
	clk  *fakeclock.Clock
	log  engine.Log
	prov *oauthtest.Server
	cfg  engine.Config
	e    *engine.Engine
	logs *syncbuf.Buffer
}

type harnessOption func(*engine.Config)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), clk: fakeclock.New(epoch), log: memlog.New(), logs: &syncbuf.Buffer{}}
	h.prov = oauthtest.New(t, oauthtest.Options{})
	h.cfg = engine.Config{
		Log: h.log, Clock: h.clk, Providers: []engine.Provider{providerConfig(h.prov, "gh")},
		Logger: newTestLogger(h.logs), ExchangeTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.log = h.cfg.Log
	h.open()
	t.Cleanup(func() { _ = h.e.Close() })
	return h
}

// open (re)opens the engine on the harness's log.
func (h *harness) open() {
	h.t.Helper()
	e, err := engine.Open(h.ctx, h.cfg)
	require.NoError(h.t, err)
	h.e = e
}

// restart closes the engine and opens a new one on the same log.
func (h *harness) restart() {
	h.t.Helper()
	require.NoError(h.t, h.e.Close())
	h.open()
}

// start begins a flow for provider gh and account, and returns it.
func (h *harness) start(account string) engine.Started {
	h.t.Helper()
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Account: account})
	require.NoError(h.t, err)
	return st
}

// connect starts a flow, authorizes it at the fake provider and delivers
// its callback, and returns the finished flow.
func (h *harness) connect(account string) states.Flow {
	h.t.Helper()
	st := h.start(account)
	_, code := h.prov.Authorize(h.t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(h.t, err)
	require.Equal(h.t, states.Complete, f.State)
	return f
}

// exchanging starts a flow and delivers its callback while the provider
// holds the token request, so the flow is mid-exchange when it returns.
// finish lets the provider answer and returns what the callback returned.
func (h *harness) exchanging() (st engine.Started, code string, finish func() (states.Flow, error)) {
	h.t.Helper()
	release := h.prov.Hold()
	st = h.start("")
	_, code = h.prov.Authorize(h.t, st.AuthURL)
	type result struct {
		f   states.Flow
		err error
	}
	res := make(chan result, 1)
	go func() {
		f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
		res <- result{f, err}
	}()
	h.prov.WaitEntered(h.t)
	return st, code, func() (states.Flow, error) {
		release()
		r := <-res
		return r.f, r.err
	}
}

func (h *harness) status(state string) states.Flow {
	h.t.Helper()
	f, err := h.e.Status(h.ctx, state)
	require.NoError(h.t, err)
	return f
}

// events returns the events of a flow's history, in order.
func (h *harness) events(state string) []states.Event {
	h.t.Helper()
	hist, err := h.e.History(h.ctx, state)
	require.NoError(h.t, err)
	out := make([]states.Event, len(hist))
	for i, r := range hist {
		out[i] = r.Event
	}
	return out
}

// dump reads the whole log in order.
func dump(t testingT, l engine.Log) []states.Record {
	t.Helper()
	var out []states.Record
	require.NoError(t, l.Scan(context.Background(), 0, func(r states.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

// checkReplay asserts the whole log replays legally through the machine.
func checkReplay(t testingT, l engine.Log) map[string]states.Flow {
	t.Helper()
	flows, err := states.Replay(dump(t, l), nil)
	require.NoError(t, err)
	return flows
}

// newTestLogger logs everything, debug included, as text into w.
func newTestLogger(w *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func queryOf(t testingT, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Query()
}
