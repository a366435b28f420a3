package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/cmd/internal/metrics"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/hermetic"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(hermetic.Wrap(m))
}

// Secrets the tests deal in; none may reach a log. goodCode is a code the
// fake provider accepts (once) and badCode one it refuses: the tests
// deliver callbacks as a browser would, without playing the user at the
// provider.
const (
	goodCode     = "code-good-7f3a9c"
	badCode      = "code-bad-1e2d3c"
	clientSecret = "cs-secret-44cc55"
	serviceTok   = "svc-token-0123456789abcdef0123456789abcdef"
)

// newFakeProvider is the provider's token endpoint: goodCode succeeds,
// granting scope "read"; any other code gets invalid_grant.
func newFakeProvider(t *testing.T) *oauthtest.Server {
	p := oauthtest.New(t, oauthtest.Options{ClientID: "cid", ClientSecret: clientSecret,
		AcceptCode: func(code string) bool { return code == goodCode }})
	p.SetScope("read")
	return p
}

type harnessOpts struct {
	noGateway bool
	uid       *int
	clock     *fakeclock.Clock
	// device configures the fake provider's device endpoint.
	device bool
	// identify is the engine's Config.Identify.
	identify engine.IdentifyFunc
	// log, when set, is the engine's log instead of a fresh memlog.
	log *memlog.Log
}

// harness is a Server on a real unix socket and a real loopback TCP
// listener, with a real engine on memlog and a fake provider.
type harness struct {
	t        *testing.T
	srv      *Server
	eng      *engine.Engine
	counting *countingEngine
	provider *oauthtest.Server
	metrics  *metrics.Metrics
	sock     string
	tcp      string
	logs     *syncbuf.Buffer
	unix     *http.Client
	web      *http.Client
	clock    *fakeclock.Clock
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, provider: newFakeProvider(t), metrics: metrics.New(), logs: &syncbuf.Buffer{}, clock: o.clock}
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.sock = filepath.Join(dir, "s")
	ul, err := net.Listen("unix", h.sock)
	require.NoError(t, err)
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h.tcp = tl.Addr().String()

	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ecfg := engine.Config{
		Log: cmp.Or(o.log, memlog.New()),
		Providers: []engine.Provider{{Name: "fake", AuthURL: h.provider.URL + "/auth", TokenURL: h.provider.URL + "/token",
			AuthMethod: engine.AuthMethodClientSecretPost, ClientID: "cid", ClientSecret: clientSecret, Scopes: []string{"read"}}},
		LoopbackRedirectURL: "http://" + h.tcp + engine.CallbackPath,
		Logger:              logger.With("component", "engine"),
		Hooks:               h.metrics.Hooks(engine.Hooks{}),
		ExchangeTimeout:     20 * time.Second,
	}
	if !o.noGateway {
		ecfg.PublicBaseURL = "https://gw.example.test"
	}
	if o.device {
		ecfg.Providers[0].DeviceAuthURL = h.provider.DeviceAuthURL
	}
	if o.clock != nil {
		ecfg.Clock = o.clock
	}
	ecfg.Identify = o.identify
	h.eng, err = engine.Open(context.Background(), ecfg)
	require.NoError(t, err)
	h.counting = &countingEngine{Engine: h.eng}
	h.srv, err = New(Config{
		Engine: h.counting, ServiceToken: serviceTok, Metrics: h.metrics, Logger: logger, Version: "test",
		Providers: []wire.Provider{{Name: "fake", AuthURL: h.provider.URL + "/auth", TokenURL: h.provider.URL + "/token", ClientID: "cid", AuthMethod: "client_secret_post"}},
		Listen:    h.tcp, LoopbackRedirectURI: ecfg.LoopbackRedirectURL, UID: o.uid, ShutdownGrace: 5 * time.Second,
	})
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.srv.ServeUnix(ul) }()
	go func() { defer wg.Done(); _ = h.srv.ServeTCP(tl) }()

	unixTr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.sock)
	}}
	webTr := &http.Transport{}
	h.unix = &http.Client{Transport: unixTr, Timeout: 60 * time.Second}
	h.web = &http.Client{Transport: webTr, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		require.NoError(t, h.srv.Shutdown(context.Background()))
		wg.Wait()
		require.NoError(t, h.eng.Close())
		unixTr.CloseIdleConnections()
		webTr.CloseIdleConnections()
		h.assertNoSecretsLogged()
	})
	return h
}

// resp is a response read whole.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) errCode() string {
	var e wire.Error
	_ = json.Unmarshal(r.body, &e)
	return e.Err.Code
}

func (r resp) errMessage() string {
	var e wire.Error
	_ = json.Unmarshal(r.body, &e)
	return e.Err.Message
}

func (h *harness) do(c *http.Client, base, method, path string, body any, hdr map[string]string) resp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(h.t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, base+path, rd)
	require.NoError(h.t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(h.t, err)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// local calls the API over the unix socket.
func (h *harness) local(method, path string, body any) resp {
	return h.do(h.unix, "http://flowd", method, path, body, nil)
}

// gateway calls the TCP listener with the service token.
func (h *harness) gateway(method, path string, body any) resp {
	return h.do(h.web, "http://"+h.tcp, method, path, body, map[string]string{"Authorization": "Bearer " + serviceTok})
}

// browser calls the TCP listener with no credentials.
func (h *harness) browser(method, path string, hdr map[string]string) resp {
	return h.do(h.web, "http://"+h.tcp, method, path, nil, hdr)
}

func (h *harness) start(req wire.StartRequest) wire.StartResponse {
	h.t.Helper()
	r := h.local("POST", "/v1/flows", req)
	require.Equal(h.t, http.StatusCreated, r.status, string(r.body))
	var out wire.StartResponse
	require.NoError(h.t, json.Unmarshal(r.body, &out))
	return out
}

func (h *harness) status(state string) wire.Flow {
	h.t.Helper()
	r := h.local("GET", "/v1/flows/"+state, nil)
	require.Equal(h.t, http.StatusOK, r.status, string(r.body))
	var f wire.Flow
	require.NoError(h.t, json.Unmarshal(r.body, &f))
	return f
}

func (h *harness) assertNoSecretsLogged() {
	logs := h.logs.String()
	for _, s := range append([]string{goodCode, badCode, serviceTok}, h.provider.Secrets()...) {
		if strings.Contains(logs, s) {
			h.t.Errorf("a secret (%s…) appears in the logs", s[:min(len(s), 8)])
		}
	}
}

// countingEngine counts the calls that reach the engine, so tests can show
// a refused request touched no flow.
type countingEngine struct {
	*engine.Engine
	calls atomic.Int64
}

func (c *countingEngine) Start(ctx context.Context, r engine.StartRequest) (engine.Started, error) {
	c.calls.Add(1)
	return c.Engine.Start(ctx, r)
}

func (c *countingEngine) Callback(ctx context.Context, p engine.CallbackParams) (states.Flow, error) {
	c.calls.Add(1)
	return c.Engine.Callback(ctx, p)
}

func (c *countingEngine) Cancel(ctx context.Context, s string) (states.Flow, error) {
	c.calls.Add(1)
	return c.Engine.Cancel(ctx, s)
}

func (c *countingEngine) Status(ctx context.Context, s string) (states.Flow, error) {
	c.calls.Add(1)
	return c.Engine.Status(ctx, s)
}

func (c *countingEngine) DeviceCode(ctx context.Context, s string) (engine.DeviceCode, error) {
	c.calls.Add(1)
	return c.Engine.DeviceCode(ctx, s)
}

func (c *countingEngine) Wait(ctx context.Context, s string) (states.Flow, error) {
	c.calls.Add(1)
	return c.Engine.Wait(ctx, s)
}

func (c *countingEngine) History(ctx context.Context, s string) ([]states.Record, error) {
	c.calls.Add(1)
	return c.Engine.History(ctx, s)
}

func (c *countingEngine) Export(ctx context.Context, q engine.ExportQuery, fn func(states.Record) error) error {
	c.calls.Add(1)
	return c.Engine.Export(ctx, q, fn)
}

func (c *countingEngine) List(ctx context.Context, f engine.Filter) ([]states.Flow, error) {
	c.calls.Add(1)
	return c.Engine.List(ctx, f)
}

func (c *countingEngine) Token(ctx context.Context, k engine.TokenKey) (*oauth2.Token, engine.StoredToken, error) {
	c.calls.Add(1)
	return c.Engine.Token(ctx, k)
}

func (c *countingEngine) ForceRefresh(ctx context.Context, k engine.TokenKey) (*oauth2.Token, engine.StoredToken, error) {
	c.calls.Add(1)
	return c.Engine.ForceRefresh(ctx, k)
}

func (c *countingEngine) Disconnect(ctx context.Context, k engine.TokenKey) (engine.Disconnection, error) {
	c.calls.Add(1)
	return c.Engine.Disconnect(ctx, k)
}

func (c *countingEngine) Connections(ctx context.Context) ([]engine.Connection, error) {
	c.calls.Add(1)
	return c.Engine.Connections(ctx)
}
