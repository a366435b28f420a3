// Package server is flowd's HTTP side: the /v1 JSON API on the unix socket,
// the browser callback and gateway relay on the loopback TCP listener, the
// one policy table that says which principal may call which route, and the
// daemon's start-up and shutdown (Daemon). cmd/flowd only wires flags to it.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/cmd/internal/metrics"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/redirect"
	"github.com/flowdhq/flowd/states"
)

// Engine is what the server needs of *engine.Engine; an interface so the
// server's tests can also drive failure paths the real engine rarely takes.
type Engine interface {
	Start(ctx context.Context, req engine.StartRequest) (engine.Started, error)
	Callback(ctx context.Context, p engine.CallbackParams) (states.Flow, error)
	Launch(ctx context.Context, token string) (engine.Launched, error)
	Cancel(ctx context.Context, state string) (states.Flow, error)
	Status(ctx context.Context, state string) (states.Flow, error)
	DeviceCode(ctx context.Context, state string) (engine.DeviceCode, error)
	Wait(ctx context.Context, state string) (states.Flow, error)
	History(ctx context.Context, state string) ([]states.Record, error)
	Export(ctx context.Context, q engine.ExportQuery, fn func(states.Record) error) error
	List(ctx context.Context, f engine.Filter) ([]states.Flow, error)
	Token(ctx context.Context, key engine.TokenKey) (*oauth2.Token, engine.StoredToken, error)
	ForceRefresh(ctx context.Context, key engine.TokenKey) (*oauth2.Token, engine.StoredToken, error)
	Disconnect(ctx context.Context, key engine.TokenKey) (engine.Disconnection, error)
	Connections(ctx context.Context) ([]engine.Connection, error)
	ResolveAccount(ctx context.Context, key engine.TokenKey) (engine.TokenKey, error)
	Providers() []string
}

var _ Engine = (*engine.Engine)(nil)

// Config configures a Server.
type Config struct {
	// Engine runs the flows (required).
	Engine Engine
	// Providers describe the configured providers for GET /v1/providers;
	// SetProviders replaces them after a reload.
	Providers []wire.Provider
	// ConfigFile is the config file flowd reads (or looked for), and
	// ConfigFileFound whether it exists: GET /v1/providers names it, so
	// "no providers" says which file to edit.
	ConfigFile      string
	ConfigFileFound bool
	// Reload, if set, serves POST /v1/reload: it re-reads the config and
	// applies it, or returns an error (a *config.Error for an invalid
	// file) having changed nothing.
	Reload func(ctx context.Context) (wire.ReloadResponse, error)
	// ProviderStatus, if set, reports configured providers that cannot be
	// used yet (SetProviders replaces it after a reload) (an OIDC issuer that has not answered discovery): GET
	// /v1/providers shows them unavailable with the reason, and requests
	// naming them get provider_unavailable instead of unknown_provider.
	ProviderStatus ProviderStatus
	// ServiceToken authenticates the gateway on the TCP listener. Empty
	// disables the svc_gateway principal.
	ServiceToken string
	// Metrics, if set, serves GET /metrics and counts requests.
	Metrics *metrics.Metrics
	// Logger receives request logs; never a secret. Default: discard.
	Logger *slog.Logger
	// Version is reported by GET /v1/health.
	Version string
	// Health facts reported by GET /v1/health.
	Listen, LoopbackRedirectURI, GatewayRedirectURI string
	// UID is the uid a socket peer must have to be Local. Default os.Getuid().
	UID *int
	// ShutdownGrace bounds how long Shutdown waits for in-flight requests. Default 10s.
	ShutdownGrace time.Duration
}

// Server serves flowd's HTTP API. Create it with New.
type Server struct {
	cfg      Config
	log      *slog.Logger
	uid      int
	mux      *http.ServeMux
	started  time.Time
	handlers map[string]http.HandlerFunc
	// browser serves the loopback listener's browser routes.
	browser *redirect.Handler

	// stopping is canceled by Shutdown so long-polls return at once instead
	// of holding the shutdown for up to wire.MaxWait.
	stopping context.Context
	stop     context.CancelFunc

	mu      sync.Mutex
	servers []*http.Server
	// shutDown is set by Shutdown: a Serve that starts after it must not
	// start an HTTP server nobody will stop.
	shutDown bool

	// providers is what GET /v1/providers serves, replaced whole by
	// SetProviders.
	providers atomic.Pointer[providersView]
}

// providersView is one config's providers as GET /v1/providers shows them.
type providersView struct {
	providers       []wire.Provider
	configFile      string
	configFileFound bool
	// status reports those not usable yet (nil: all are).
	status ProviderStatus
}

// SetProviders replaces what GET /v1/providers serves, and the status of
// those not usable yet, after a reload.
func (s *Server) SetProviders(ps []wire.Provider, configFile string, found bool, status ProviderStatus) {
	s.providers.Store(&providersView{providers: slices.Clone(ps), configFile: configFile, configFileFound: found, status: status})
}

// New builds the server and its router from wire.Routes. It fails if a
// route has no handler or no policy entry, so a new route cannot be served
// by accident with no decision about who may call it.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("server: no engine")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, uid: os.Getuid(), mux: http.NewServeMux(), started: time.Now().UTC()}
	if cfg.UID != nil {
		s.uid = *cfg.UID
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.SetProviders(cfg.Providers, cfg.ConfigFile, cfg.ConfigFileFound, cfg.ProviderStatus)
	s.browser = &redirect.Handler{Engine: cfg.Engine, Pages: flowdPages{}, Observe: s.observe}
	s.handlers = map[string]http.HandlerFunc{
		wire.RouteStart:           s.handleStart,
		wire.RouteList:            s.handleList,
		wire.RouteStatus:          s.handleStatus,
		wire.RouteCancel:          s.handleCancel,
		wire.RouteHistory:         s.handleHistory,
		wire.RouteExport:          s.handleExport,
		wire.RouteCallback:        s.handleRelayCallback,
		wire.RouteProviders:       s.handleProviders,
		wire.RouteToken:           s.handleToken,
		wire.RouteDisconnect:      s.handleDisconnect,
		wire.RouteConnections:     s.handleConnections,
		wire.RouteHealth:          s.handleHealth,
		wire.RouteReload:          s.handleReload,
		wire.RouteMetrics:         s.handleMetrics,
		wire.RouteBrowserCallback: s.browser.ServeCallback,
		wire.RouteLaunch:          s.browser.ServeLaunch,
		wire.RoutePreflight:       s.browser.ServePreflight,
	}
	for _, rt := range wire.Routes {
		h, ok := s.handlers[rt.Name]
		if !ok {
			return nil, fmt.Errorf("server: route %s (%s %s) has no handler", rt.Name, rt.Method, rt.Pattern)
		}
		if _, ok := Policy[rt.Name]; !ok {
			return nil, fmt.Errorf("server: route %s has no entry in the policy table", rt.Name)
		}
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.guard(rt, h))
	}
	return s, nil
}

// Handler returns the server's root handler. Requests reaching it outside
// ServeUnix/ServeTCP have no principal and are refused; it exists for tests
// of routing.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

type ctxKey int

const connKey ctxKey = 0

// connInfo is what the listener learned about a connection.
type connInfo struct {
	unix   bool
	uid    int
	uidErr error
}

// serveHTTP routes a request, turning the mux's own 404 and 405 into the
// JSON error shape.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		// ServeHTTP, not h: only the mux's ServeHTTP sets the path values.
		s.mux.ServeHTTP(w, r)
		return
	}
	// No route matched: let the mux decide between 404 and 405 (it knows
	// the Allow header), but answer in our shape.
	cw := &captureWriter{header: http.Header{}}
	h.ServeHTTP(cw, r)
	if cw.status == http.StatusMethodNotAllowed {
		if allow := cw.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		s.writeError(w, r, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed,
			fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, cw.header.Get("Allow")))
		return
	}
	s.writeError(w, r, http.StatusNotFound, wire.CodeNotFound,
		fmt.Sprintf("no route %s %s; the API is documented in docs/api.yaml", r.Method, clip(r.URL.Path, 200)))
}

// captureWriter records what the mux's internal 404/405 handler would write.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

// principal decides who is calling. ok is false if the request was
// answered already (a wrong bearer token).
func (s *Server) principal(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	ci, _ := r.Context().Value(connKey).(connInfo)
	if ci.unix {
		if ci.uidErr == nil && ci.uid == s.uid {
			return Local, true
		}
		return Stranger, true
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return Browser, true
	}
	tok, found := strings.CutPrefix(auth, "Bearer ")
	if found && s.cfg.ServiceToken != "" &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.cfg.ServiceToken)) == 1 {
		return Gateway, true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="flowd"`)
	s.writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthorized,
		"the bearer token is not flowd's service token; use the token in the service token file (service_token in flowd's state directory unless configured)")
	return "", false
}

// guard applies the policy table and the size limits before a handler.
func (s *Server) guard(rt wire.Route, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		begin := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.Request(rt.Name, sw.code())
			}
			lvl := slog.LevelDebug
			if sw.code() >= 500 {
				lvl = slog.LevelError
			}
			// Never the URL: the callback's query carries the authorization code.
			s.log.Log(r.Context(), lvl, "request", "route", rt.Name, "status", sw.code(), "duration", time.Since(begin))
		}()
		p, ok := s.principal(sw, r)
		if !ok {
			return
		}
		if !Allowed(rt.Name, p) {
			s.deny(sw, r, rt, p)
			return
		}
		if len(r.URL.RawQuery) > wire.MaxQueryBytes {
			s.writeError(sw, r, http.StatusRequestURITooLong, wire.CodeTooLarge,
				fmt.Sprintf("the query string is over %d bytes", wire.MaxQueryBytes))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(sw, r.Body, wire.MaxBodyBytes)
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey, p))
		h(sw, r)
	})
}

const principalKey ctxKey = 1

func (s *Server) deny(w http.ResponseWriter, r *http.Request, rt wire.Route, p Principal) {
	switch p {
	case Browser:
		w.Header().Set("WWW-Authenticate", `Bearer realm="flowd"`)
		s.writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthorized,
			fmt.Sprintf("%s %s needs flowd's unix socket (flowctl) or the gateway's service token", rt.Method, rt.Pattern))
	case Stranger:
		ci, _ := r.Context().Value(connKey).(connInfo)
		msg := fmt.Sprintf("this socket serves only uid %d; your uid is %d: run flowctl as the user who runs flowd", s.uid, ci.uid)
		if ci.uidErr != nil {
			msg = "flowd could not read the socket peer's credentials, so it refuses the request"
		}
		s.writeError(w, r, http.StatusForbidden, wire.CodeForbidden, msg)
	default:
		s.writeError(w, r, http.StatusForbidden, wire.CodeForbidden,
			fmt.Sprintf("%s may not call %s %s", p, rt.Method, rt.Pattern))
	}
}

// statusWriter remembers the status written, for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the connection (MaxBytesReader
// uses it to close an over-long body's connection).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) newHTTPServer(unix bool) *http.Server {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ci := connInfo{unix: unix}
			if unix {
				ci.uid, ci.uidErr = peerUID(c)
			}
			return context.WithValue(ctx, connKey, ci)
		},
	}
	if !unix {
		// The TCP side faces browsers and the gateway: bound a slow client.
		hs.ReadTimeout = 30 * time.Second
		hs.WriteTimeout = wire.MaxWait + time.Minute
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutDown {
		return nil
	}
	s.servers = append(s.servers, hs)
	return hs
}

// ServeUnix serves the API on a unix-socket listener until Shutdown. Peers
// are identified by SO_PEERCRED: only flowd's own uid is Local.
func (s *Server) ServeUnix(l net.Listener) error { return s.serve(l, true) }

// ServeTCP serves the loopback listener (browser callback, gateway relay)
// until Shutdown.
func (s *Server) ServeTCP(l net.Listener) error { return s.serve(l, false) }

// serve serves l, or closes it when Shutdown came first (a daemon stopped
// at once: its Serve goroutines may start after Shutdown has run).
func (s *Server) serve(l net.Listener, unix bool) error {
	hs := s.newHTTPServer(unix)
	if hs == nil {
		_ = l.Close()
		return nil
	}
	return ignoreClosed(hs.Serve(l))
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, ends long-polls, and waits for
// in-flight requests, for at most ShutdownGrace or until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
	defer cancel()
	s.mu.Lock()
	s.shutDown = true
	servers := append([]*http.Server(nil), s.servers...)
	s.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, hs := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
				emu.Lock()
				errs = append(errs, fmt.Errorf("shut down HTTP server: %w", err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ProviderStatus reports providers that are configured but cannot be used
// yet. The Server consults it for GET /v1/providers and for errors naming
// an unknown provider.
type ProviderStatus interface {
	// Unavailable returns why the named provider cannot be used now, as a
	// sentence for the user, or ok false.
	Unavailable(name string) (why string, ok bool)
	// Describe returns ps with each provider's current status and endpoints.
	Describe(ps []wire.Provider) []wire.Provider
}
