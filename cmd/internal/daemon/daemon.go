package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sys/unix"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/metrics"
	"github.com/flowdhq/flowd/cmd/internal/pidfile"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/identity"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// Log is an event log flowd opens and closes: persist.DB in production,
// memlog (with a no-op Close) in tests.
type Log interface {
	engine.Log
	io.Closer
}

// Options configure a Daemon. Empty paths and addresses fall back to the
// config file, then to the embedded defaults.
type Options struct {
	// ConfigPath is the config file. "" means config.DefaultPath(), where
	// a missing file is fine (no providers); a named file must exist.
	ConfigPath string
	StateDir   string
	Socket     string
	Listen     string
	// OpenLog opens the event log at path (required). The log must refuse
	// a second opener with an error that names the path.
	OpenLog func(path string) (Log, error)
	// Logger receives the daemon's logs. Default: discard.
	Logger  *slog.Logger
	Version string
	// Getenv resolves client_secret_env. Default os.Getenv.
	Getenv func(string) string
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
	Config     *config.Config
	StateDir   string
	SocketPath string
	// Addr is the loopback listener's actual address.
	Addr string
	// ServiceTokenPath is where the gateway's token is kept.
	ServiceTokenPath string
	Engine           *engine.Engine
	Server           *Server
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
	if o.OpenLog == nil {
		return nil, errors.New("flowd: no event log opener")
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{log: lg}
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()

	cfgPath, missingOK := o.ConfigPath, false
	if cfgPath == "" {
		cfgPath, missingOK = config.DefaultPath(), true
	}
	cfg, err := config.Load(cfgPath, missingOK, o.Getenv)
	if err != nil {
		return nil, err
	}
	d.Config = cfg
	d.opts, d.cfgPath, d.cfgMissingOK, d.bootConfig = o, cfgPath, missingOK, cfg
	if cfg.File == "" {
		lg.Info("no config file; running with no providers", "looked_at", cfgPath)
	} else {
		warnReadableSecrets(lg, cfg)
	}

	d.StateDir = first(o.StateDir, cfg.StateDir, wire.DefaultStateDir())
	if err := prepareStateDir(d.StateDir); err != nil {
		return nil, err
	}
	// An issuer that does not answer stops only its own provider: flowd
	// starts without it and retries in the background (discovery.go).
	d.discovery = newDiscovery(o.DiscoveryClient, o.DiscoveryBackoff, o.DiscoveryClock, lg.With("component", "discovery"))
	unavailable := d.discovery.resolve(ctx, cfg, cmp.Or(o.DiscoveryTimeout, StartupDiscoveryTimeout))
	if ctx.Err() != nil {
		return nil, fmt.Errorf("start-up interrupted during OIDC discovery: %w", ctx.Err())
	}

	// The log first: its lock is what stops a second flowd on this state
	// directory, before it touches the socket of the first.
	dbPath := filepath.Join(d.StateDir, DBFile)
	db, err := o.OpenLog(dbPath)
	if err != nil {
		if errors.Is(err, persist.ErrLocked) {
			return nil, lockedError(d.StateDir, dbPath, err)
		}
		if strings.Contains(err.Error(), dbPath) {
			return nil, err // persist already names the file
		}
		return nil, fmt.Errorf("open event log %s: %w", dbPath, err)
	}
	d.db = db
	// The log may have just created its files: check them too.
	if err := checkPrivate(d.StateDir); err != nil {
		return nil, err
	}

	d.ServiceTokenPath = first(cfg.ServiceTokenFile, filepath.Join(d.StateDir, ServiceTokenFile))
	token, err := serviceToken(d.ServiceTokenPath, cfg.ServiceTokenFile == "")
	if err != nil {
		return nil, err
	}

	listen := first(o.Listen, cfg.Listen)
	if d.tcpL, err = listenTCP(listen); err != nil {
		return nil, err
	}
	d.Addr = d.tcpL.Addr().String()
	// The default socket follows the state directory actually used
	// (docs/config.md), not the default one.
	d.SocketPath = first(o.Socket, cfg.Socket, wire.SocketPathIn(d.StateDir))
	if d.unixL, err = listenUnix(d.SocketPath); err != nil {
		return nil, err
	}
	// Beside the database it guards: a second flowd that finds the
	// database locked says which process holds it and where it listens.
	if err := pidfile.Write(d.StateDir, os.Getpid(), d.SocketPath); err != nil {
		return nil, err
	}
	d.pidWritten = true

	d.Metrics = metrics.New()
	if st, ok := db.(interface{ Stats() persist.Stats }); ok {
		d.Metrics.WatchLog(func() (uint64, uint64) { s := st.Stats(); return s.Commits, s.Appends })
	}
	loopback := "http://" + redirectHost(listen, d.Addr) + engine.CallbackPath
	ecfg := engine.Config{
		Log: db, Providers: availableProviders(cfg, unavailable), TTL: cfg.TTL, Retention: cfg.Retention, MCP: cfg.MCP,
		LoopbackRedirectURL: loopback, PublicBaseURL: cfg.PublicBaseURL,
		Logger: lg.With("component", "engine"), Hooks: d.Metrics.Hooks(engine.Hooks{}),
	}
	if o.Engine != nil {
		o.Engine(&ecfg)
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
			return nil, fmt.Errorf("start the engine: %w; the event log %s is damaged: keep a copy for a bug report, then restore a backup or move it aside to start empty", err, dbPath)
		}
		return nil, fmt.Errorf("start the engine: %w", err)
	}
	gateway := ""
	if cfg.PublicBaseURL != "" {
		gateway = cfg.PublicBaseURL + engine.CallbackPath
	}
	d.Server, err = New(Config{
		Engine: d.Engine, Providers: WireProviders(cfg.Providers), ServiceToken: token,
		ConfigFile: cfgPath, ConfigFileFound: cfg.File != "", Reload: d.Reload,
		Metrics: d.Metrics, Logger: lg.With("component", "http"), Version: o.Version,
		Listen: d.Addr, LoopbackRedirectURI: loopback, GatewayRedirectURI: gateway,
		ShutdownGrace: o.ShutdownGrace, ProviderStatus: d.discovery,
	})
	if err != nil {
		return nil, err
	}
	d.discovery.start(d.Engine)
	lg.Info("flowd ready", "socket", d.SocketPath, "listen", d.Addr, "state_dir", d.StateDir,
		"providers", len(cfg.Providers), "unavailable", strings.Join(unavailable, ","), "loopback_redirect_uri", loopback)
	return d, nil
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

// redirectHost keeps the host as configured ("localhost" stays localhost,
// since that is what is registered at the provider) with the port actually
// bound (which differs only for port 0, in tests).
func redirectHost(configured, bound string) string {
	host, _, err := net.SplitHostPort(configured)
	_, port, err2 := net.SplitHostPort(bound)
	if err != nil || err2 != nil || host == "" {
		return bound
	}
	return net.JoinHostPort(host, port)
}

// prepareStateDir creates the state directory 0700, or checks an existing
// one and the files in it are private to flowd's user.
func prepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return checkPrivate(dir)
}

// checkPrivate refuses a state directory, or a regular file in it (the
// database, its key, the service token), that group or others can access.
func checkPrivate(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("state directory %s is not a directory; point -state-dir elsewhere", dir)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("state directory %s has mode %04o: group or others can reach flowd's database and keys; run: chmod 700 %s", dir, perm, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read state directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			p := filepath.Join(dir, e.Name())
			return fmt.Errorf("%s has mode %04o: group or others can read it; run: chmod 600 %s", p, perm, p)
		}
	}
	return nil
}

// serviceToken reads the gateway's token, creating it (0600, random) when
// it is the default file and missing.
func serviceToken(path string, create bool) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createServiceToken(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("service token file %s (service_token_file in the config) does not exist; create it with: (umask 077; head -c 32 /dev/urandom | base64 > %s)", path, path)
	}
	if err != nil {
		return "", fmt.Errorf("read service token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read service token file %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("service token file %s has mode %04o: group or others can read it; run: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read service token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minServiceToken {
		return "", fmt.Errorf("service token in %s is shorter than %d characters; replace it with: (umask 077; head -c 32 /dev/urandom | base64 > %s)", path, minServiceToken, path)
	}
	return tok, nil
}

func createServiceToken(path string) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("create service token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create service token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("write service token file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write service token file %s: %w", path, err)
	}
	return tok, nil
}

func listenTCP(addr string) (net.Listener, error) {
	// The config file's listen is checked on load; a flag or FLOWD_LISTEN here.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q is not host:port (e.g. 127.0.0.1:8085)", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen address %q is not a loopback address; flowd's listener must stay on this machine (use 127.0.0.1 or ::1)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	_, port, _ := net.SplitHostPort(addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("loopback port %s (%s) is already in use by another process; stop it (see: ss -ltnp 'sport = :%s'), or set listen in the config or -listen to another address", port, addr, port)
	}
	return nil, fmt.Errorf("listen on %s: %w; set listen in the config or -listen", addr, err)
}

// listenUnix binds the API socket, mode 0600. A live socket means another
// flowd; a dead one is left over from a crash and is replaced.
func listenUnix(path string) (net.Listener, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("socket path %s is %d bytes, over the 107 a unix socket allows; use a shorter -socket", path, len(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another -socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another flowd is already serving on socket %s; stop it, or give this one another -socket and -state-dir", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// umask, not a chmod after bind: there is no moment at which the
	// socket is open to others.
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return l, nil
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
