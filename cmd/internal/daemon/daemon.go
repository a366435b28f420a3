package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/metrics"
	"github.com/flowdhq/flowd/cmd/internal/pidfile"
	"github.com/flowdhq/flowd/cmd/internal/server"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/identity"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// Options configure a Daemon.
type Options struct {
	// Flags are the settings given on the command line ("" for one not
	// given). Open settles them over the environment and the config file
	// (Settle); tests set the paths here.
	Flags
	// Config is the config file, as loaded from the path the flags and
	// environment settle on; nil makes Open load it.
	Config *config.Config
	// Getenv is flowd's environment: its FLOWD_* settings and the
	// providers' client_secret_env. Default os.Getenv.
	Getenv func(string) string
	// OpenLog, if set, opens the event log at path instead of the store
	// the settings select (tests: memlog). The log must refuse a second
	// opener with an error that names the path.
	OpenLog func(path string) (Log, error)
	// Logger receives the daemon's logs. Default: discard.
	Logger  *slog.Logger
	Version string
	// DiscoveryClient fetches OIDC discovery documents. Default http.DefaultClient.
	DiscoveryClient *http.Client
	// DiscoveryTimeout bounds the first discovery of each issuer at
	// start-up. Default StartupDiscoveryTimeout.
	DiscoveryTimeout time.Duration
	// DiscoveryBackoff spaces the background retries of issuers that did
	// not answer. Default DefaultBackoff.
	DiscoveryBackoff Backoff
	// DiscoveryClock times those retries (tests: engine/fakeclock).
	// Default the system clock.
	DiscoveryClock engine.Clock
	// Engine, if set, adjusts the engine's config before Open (tests: clock, HTTP client).
	Engine func(*engine.Config)
	// ShutdownGrace bounds how long Close waits for in-flight requests.
	ShutdownGrace time.Duration
}

// File names in the state directory.
const (
	DBFile           = "flowd.db"
	ServiceTokenFile = "service_token"
	// minServiceToken is the shortest service token flowd accepts, in characters.
	minServiceToken = 32
)

// Daemon is a running flowd: config, event log, engine, both listeners and
// the HTTP server. Open starts it, Serve serves, Close stops it in order.
type Daemon struct {
	// Config is the config in force: Reload replaces it, so read it only
	// while no reload can run (after Open, in tests).
	Config *config.Config
	// Settings are the start-up settings Open settled (Settle).
	Settings   Settings
	StateDir   string
	SocketPath string
	// Addr is the loopback listener's actual address.
	Addr string
	// ServiceTokenPath is where the gateway's token is kept.
	ServiceTokenPath string
	Engine           *engine.Engine
	Server           *server.Server
	Metrics          *metrics.Metrics

	log       *slog.Logger
	db        Log
	discovery *discovery
	unixL     net.Listener
	tcpL      net.Listener
	closeOnce sync.Once
	closeErr  error
	// identify is how sign-ins are identified, swapped by a reload;
	// identifyClient is the HTTP client it asks providers with.
	identify       atomic.Pointer[engine.IdentifyFunc]
	identifyClient *http.Client

	// What Reload needs to read the config again as Open did.
	opts         Options
	cfgPath      string
	cfgMissingOK bool
	// bootConfig is the config flowd started with: what settings that
	// apply only at start-up still run with.
	bootConfig *config.Config
	// reloadMu serializes reloads (SIGHUP and POST /v1/reload) and guards
	// Config after Open.
	reloadMu sync.Mutex
	// closed is set by Close, under reloadMu: no reload after it.
	closed bool
	// pidWritten: this daemon wrote the state directory's flowd.pid and
	// removes it on Close.
	pidWritten bool
}

// Open loads the config, checks the state directory, opens the log and the
// engine, and binds both listeners. Any failure says which file, field,
// port or path is at fault and what to do; whatever was opened is closed.
func Open(ctx context.Context, o Options) (_ *Daemon, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	d := &Daemon{log: o.Logger, opts: o}
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	if err := d.settle(); err != nil {
		return nil, err
	}
	if err := prepareStateDir(d.StateDir); err != nil {
		return nil, err
	}
	// An issuer that does not answer stops only its own provider: flowd
	// starts without it and retries in the background (discovery.go).
	d.discovery = newDiscovery(o.DiscoveryClient, o.DiscoveryBackoff, o.DiscoveryClock, d.log.With("component", "discovery"))
	unavailable := d.discovery.resolve(ctx, d.Config, cmp.Or(o.DiscoveryTimeout, StartupDiscoveryTimeout))
	if ctx.Err() != nil {
		return nil, fmt.Errorf("start-up interrupted during OIDC discovery: %w", ctx.Err())
	}
	// The log first: its lock is what stops a second flowd on this state
	// directory, before it touches the socket of the first.
	if err := d.openLog(ctx); err != nil {
		return nil, err
	}
	d.ServiceTokenPath = first(d.Config.ServiceTokenFile, filepath.Join(d.StateDir, ServiceTokenFile))
	token, err := serviceToken(d.ServiceTokenPath, d.Config.ServiceTokenFile == "")
	if err != nil {
		return nil, err
	}
	if err := d.listen(); err != nil {
		return nil, err
	}
	loopback := "http://" + redirectHost(d.Settings.Listen, d.Addr) + engine.CallbackPath
	if err := d.startEngine(ctx, loopback, unavailable); err != nil {
		return nil, err
	}
	if err := d.newServer(token, loopback); err != nil {
		return nil, err
	}
	d.discovery.start(d.Engine)
	d.log.Info("flowd ready", "socket", d.SocketPath, "listen", d.Addr, "state_dir", d.StateDir, "store", d.Settings.Store.Kind,
		"providers", len(d.Config.Providers), "unavailable", strings.Join(unavailable, ","), "loopback_redirect_uri", loopback)
	return d, nil
}

// settle loads the config file (unless Options.Config holds it) and
// settles the start-up settings over it.
func (d *Daemon) settle() (err error) {
	o := d.opts
	d.cfgPath, d.cfgMissingOK, _ = ConfigPath(o.Flags, o.Getenv)
	cfg := o.Config
	if cfg == nil {
		if cfg, err = config.Load(d.cfgPath, d.cfgMissingOK, o.Getenv); err != nil {
			return err
		}
	}
	if d.Settings, err = Settle(o.Flags, o.Getenv, cfg); err != nil {
		return err
	}
	d.Config, d.bootConfig, d.StateDir = cfg, cfg, d.Settings.StateDir
	if cfg.File == "" {
		d.log.Info("no config file; running with no providers", "looked_at", d.cfgPath)
	} else {
		warnReadableSecrets(d.log, cfg)
	}
	return nil
}

// openLog opens the event log in the store the settings chose (or
// Options.OpenLog's), and checks the files it may have created.
func (d *Daemon) openLog(ctx context.Context) error {
	dbPath := filepath.Join(d.StateDir, DBFile)
	open := d.opts.OpenLog
	if open == nil {
		open = d.Settings.Store.opener(ctx)
	}
	db, err := open(dbPath)
	if err != nil {
		if errors.Is(err, persist.ErrLocked) {
			return lockedError(d.StateDir, dbPath, err)
		}
		if strings.Contains(err.Error(), dbPath) {
			return err // persist already names the file
		}
		return fmt.Errorf("open event log %s: %w", dbPath, err)
	}
	d.db = db
	return checkPrivate(d.StateDir)
}

// listen binds the loopback listener and the API socket, and writes the
// pid file beside the database it guards: a second flowd that finds the
// database locked says which process holds it and where it listens.
func (d *Daemon) listen() (err error) {
	if d.tcpL, err = listenTCP(d.Settings.Listen); err != nil {
		return err
	}
	d.Addr = d.tcpL.Addr().String()
	d.SocketPath = d.Settings.Socket
	if d.unixL, err = listenUnix(d.SocketPath); err != nil {
		return err
	}
	if err := pidfile.Write(d.StateDir, os.Getpid(), d.SocketPath); err != nil {
		return err
	}
	d.pidWritten = true
	return nil
}

// startEngine opens the engine on the log, with the providers whose
// issuers answered, sign-ins identified as a reload may change.
func (d *Daemon) startEngine(ctx context.Context, loopback string, unavailable []string) (err error) {
	cfg := d.Config
	d.Metrics = metrics.New()
	if st, ok := d.db.(interface{ Stats() persist.Stats }); ok {
		d.Metrics.WatchLog(func() (uint64, uint64) { s := st.Stats(); return s.Commits, s.Appends })
	}
	ecfg := engine.Config{
		Log: d.db, Providers: availableProviders(cfg, unavailable), TTL: cfg.TTL, Retention: cfg.Retention, MCP: cfg.MCP,
		LoopbackRedirectURL: loopback, PublicBaseURL: cfg.PublicBaseURL,
		Logger: d.log.With("component", "engine"), Hooks: d.Metrics.Hooks(engine.Hooks{}),
	}
	if d.opts.Engine != nil {
		d.opts.Engine(&ecfg)
	}
	if ecfg.Identify == nil {
		// A reload swaps the providers' identity settings (setIdentify).
		d.identifyClient = ecfg.HTTPClient
		d.setIdentify(cfg)
		ecfg.Identify = func(ctx context.Context, p engine.Provider, tok *oauth2.Token, nonce string) (engine.Identity, error) {
			return (*d.identify.Load())(ctx, p, tok, nonce)
		}
	}
	if d.Engine, err = engine.Open(ctx, ecfg); err != nil {
		var re *states.RecordError
		if errors.As(err, &re) {
			// A record the machine refuses is damage to the log: say which
			// file, and what to do, as persist does for damage it finds.
			return fmt.Errorf("start the engine: %w; the event log %s is damaged: keep a copy for a bug report, then restore a backup or move it aside to start empty", err, filepath.Join(d.StateDir, DBFile))
		}
		return fmt.Errorf("start the engine: %w", err)
	}
	return nil
}

// newServer builds the HTTP API over the engine.
func (d *Daemon) newServer(token, loopback string) (err error) {
	cfg := d.Config
	gateway := ""
	if cfg.PublicBaseURL != "" {
		gateway = cfg.PublicBaseURL + engine.CallbackPath
	}
	d.Server, err = server.New(server.Config{
		Engine: d.Engine, Providers: WireProviders(cfg.Providers), ServiceToken: token,
		ConfigFile: d.cfgPath, ConfigFileFound: cfg.File != "", Reload: d.Reload,
		Metrics: d.Metrics, Logger: d.log.With("component", "http"), Version: d.opts.Version,
		Listen: d.Addr, LoopbackRedirectURI: loopback, GatewayRedirectURI: gateway,
		ShutdownGrace: d.opts.ShutdownGrace, ProviderStatus: d.discovery,
	})
	return err
}

// Serve serves both listeners until ctx is done or one fails, then closes
// the daemon. It returns the first serving error, joined with any error
// of Close.
func (d *Daemon) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- d.Server.ServeUnix(d.unixL) }()
	go func() { errc <- d.Server.ServeTCP(d.tcpL) }()
	var serveErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case serveErr = <-errc:
		if serveErr != nil {
			serveErr = fmt.Errorf("serve: %w", serveErr)
		}
	}
	return errors.Join(serveErr, d.Close())
}

// Close stops in dependency order: stop accepting and let in-flight
// requests finish (bounded), then close the engine (in-flight appends
// finish), then the database, then remove the socket.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.Server != nil {
			errs = append(errs, d.Server.Shutdown(context.Background()))
		} else {
			for _, l := range []net.Listener{d.unixL, d.tcpL} {
				if l != nil {
					_ = l.Close()
				}
			}
		}
		// Before the engine: a retry must not add a provider to a closed
		// one. Under reloadMu, which a reload holds while it swaps them.
		d.reloadMu.Lock()
		d.closed = true
		if d.discovery != nil {
			d.discovery.Close()
		}
		d.reloadMu.Unlock()
		if d.Engine != nil {
			if err := d.Engine.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close engine: %w", err))
			}
		}
		if d.db != nil {
			if err := d.db.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close event log: %w", err))
			}
		}
		if d.unixL != nil {
			// net.UnixListener removes its socket file on Close; make sure.
			_ = os.Remove(d.SocketPath)
		}
		if d.pidWritten {
			pidfile.Remove(d.StateDir, os.Getpid())
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// lockedError says which flowd holds the event log, from the pid file it
// wrote, and what to do: reach it, stop it, or reload its config.
func lockedError(stateDir, dbPath string, err error) error {
	r, perr := pidfile.Read(stateDir)
	if perr != nil || !r.Alive {
		return fmt.Errorf("%w; another process holds %s (see: fuser -v %s)", err, dbPath, dbPath)
	}
	return fmt.Errorf("another flowd (pid %d, socket %s) is running and holds the event log %s: use that one (flowctl --socket %s; flowctl reload applies config changes), or stop it first (kill %d)",
		r.PID, r.Socket, dbPath, r.Socket, r.PID)
}

// availableProviders converts the providers of cfg for the engine, but
// those named in unavailable (their issuer did not answer discovery).
func availableProviders(cfg *config.Config, unavailable []string) []engine.Provider {
	var out []engine.Provider
	for _, p := range cfg.Providers {
		if !slices.Contains(unavailable, p.Name) {
			out = append(out, p.Engine())
		}
	}
	return out
}

// WireProviders describes providers for GET /v1/providers, without secrets.
func WireProviders(ps []config.Provider) []wire.Provider {
	out := make([]wire.Provider, len(ps))
	for i, p := range ps {
		out[i] = wire.Provider{Name: p.Name, Preset: p.Preset, AuthURL: p.AuthURL, TokenURL: p.TokenURL,
			Issuer: p.Issuer, ClientID: p.ClientID, Scopes: p.Scopes,
			AuthMethod: p.AuthMethod, AuthMethodFrom: p.AuthMethodFrom, IssuerRequired: p.RequireIssuer,
			DeviceAuthURL: p.DeviceAuthURL}
	}
	return out
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// warnReadableSecrets warns when the config file holds a client secret
// inline and others can read it.
func warnReadableSecrets(lg *slog.Logger, cfg *config.Config) {
	inline := false
	for _, p := range cfg.Providers {
		inline = inline || (p.ClientSecret != "" && p.ClientSecretEnv == "")
	}
	if !inline {
		return
	}
	if fi, err := os.Stat(cfg.File); err == nil && fi.Mode().Perm()&0o077 != 0 {
		lg.Warn("the config file holds a client secret and group or others can read it; run chmod 600 on it, or use client_secret_env", "file", cfg.File)
	}
}

// identityProviders says how each configured provider's users are
// identified: its ID tokens (a preset's issuer and JWKS, or the configured
// issuer, whose keys discovery names), else its userinfo URL.
func identityProviders(ps []config.Provider) []identity.Provider {
	out := make([]identity.Provider, 0, len(ps))
	for _, p := range ps {
		out = append(out, identity.Provider{Name: p.Name, ClientID: p.ClientID,
			IDTokenIssuer: cmp.Or(p.IDTokenIssuer, p.Issuer), JWKSURL: p.JWKSURL, UserInfoURL: p.UserInfoURL})
	}
	return out
}

// setIdentify makes cfg's providers the ones sign-ins are identified by.
func (d *Daemon) setIdentify(cfg *config.Config) {
	f := identity.New(identityProviders(cfg.Providers), identity.Options{HTTPClient: d.identifyClient})
	d.identify.Store(&f)
}
