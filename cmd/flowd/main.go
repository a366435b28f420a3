// Command flowd is the daemon that owns every OAuth connect flow. It runs
// with no flags on embedded defaults; see `flowd -help-config` (docs/config.md)
// and `flowd -h`.
//
// This file only wires flags and signals to cmd/internal/daemon, which
// settles them over the environment and the config file and starts the
// daemon; cmd/internal/server is its HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/daemon"
	"github.com/flowdhq/flowd/cmd/internal/version"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/docs"
	"github.com/flowdhq/flowd/persist/etcdlog"
)

// DefaultGOGC is the GOGC flowd runs with when the environment sets none.
// Measured with cmd/flowbench (docs/bench.md): it carries as many durable
// transitions as the heap floor flowd used to keep by resetting GOGC after
// every collection, and about a fifth more than GOGC=100.
const DefaultGOGC = 400

func main() {
	// A small live heap and ~30 KiB allocated per connect: at Go's
	// default GOGC=100 the collector runs hundreds of times a second under
	// load. GOGC in the environment overrides this (docs/config.md#memory).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("flowd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Flags default to "": daemon.Settle puts them over the environment
	// and the config file; the help names each one's other spellings.
	var f daemon.Flags
	fs.StringVar(&f.ConfigPath, "config", "", "config file (env FLOWD_CONFIG; default "+config.DefaultPath()+", optional)")
	fs.StringVar(&f.StateDir, "state-dir", "", "state directory for the database, key and service token (env FLOWD_STATE_DIR, config state_dir; default "+wire.DefaultStateDir()+")")
	fs.StringVar(&f.Socket, "socket", "", "API unix socket (env "+wire.SocketEnv+", config socket; default $XDG_RUNTIME_DIR/flowd.sock, else flowd.sock in the state directory)")
	fs.StringVar(&f.Listen, "listen", "", "loopback listener for /oauth/callback and the gateway relay (env FLOWD_LISTEN, config listen; default "+config.DefaultListen+")")
	fs.StringVar(&f.LogLevel, "log-level", "", "debug, info, warn or error (env FLOWD_LOG_LEVEL; default info)")
	fs.StringVar(&f.LogFormat, "log-format", "", "text or json (env FLOWD_LOG_FORMAT; default text)")
	fs.StringVar(&f.Store, "store", "", "event log: bbolt (a file in the state directory) or etcd (a cluster shared by replicas; see docs/deploy.md) (env FLOWD_STORE, config store; default bbolt)")
	fs.StringVar(&f.EtcdEndpoints, "etcd-endpoints", "", "etcd members' client URLs, comma-separated (env FLOWD_ETCD_ENDPOINTS, config etcd.endpoints)")
	fs.StringVar(&f.EtcdPrefix, "etcd-prefix", "", "key prefix of flowd's log in etcd (env FLOWD_ETCD_PREFIX, config etcd.prefix; default "+etcdlog.DefaultPrefix+")")
	fs.StringVar(&f.EtcdCert, "etcd-cert", "", "client certificate for etcd, PEM (env FLOWD_ETCD_CERT, config etcd.cert)")
	fs.StringVar(&f.EtcdKey, "etcd-key", "", "the client certificate's key, PEM (env FLOWD_ETCD_KEY, config etcd.key)")
	fs.StringVar(&f.EtcdCA, "etcd-ca", "", "CA of the etcd members' certificates, PEM (env FLOWD_ETCD_CA, config etcd.ca; default the system's roots when the endpoints are https)")
	fs.StringVar(&f.SealKeyFile, "seal-key-file", "", "with -store etcd: the 32-byte sealing key file every replica shares (env FLOWD_SEAL_KEY_FILE, config etcd.seal_key_file; else the key in base64 in $"+etcdlog.KeyEnv+")")
	check := fs.Bool("check-config", false, "load the config (and discover OIDC issuers), print the providers and where each start-up setting comes from, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	helpConfig := fs.Bool("help-config", false, "print the configuration reference (docs/config.md) and a commented example file, and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: flowd [flags]\n\nflowd owns OAuth connect flows; flowctl talks to it over the unix socket.\nWith no flags it runs on embedded defaults. A flag wins over its environment\nvariable, which wins over the config file.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flowd: unexpected argument %q; flowd takes only flags (see flowd -h)\n", fs.Arg(0))
		return 2
	}
	if *helpConfig {
		// On stdout, so it pipes into a pager or a file.
		fmt.Fprintf(os.Stdout, "%s\n## Example config file (docs/flowd.example.toml)\n\n```toml\n%s```\n", docs.ConfigReference, docs.ConfigExample)
		return 0
	}
	if *showVersion {
		fmt.Fprintln(stderr, "flowd", versionString())
		return 0
	}
	cfgPath, missingOK, _ := daemon.ConfigPath(f, os.Getenv)
	cfg, err := config.Load(cfgPath, missingOK, nil)
	if err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 1
	}
	settings, err := daemon.Settle(f, os.Getenv, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 2
	}
	setup := logSetup{format: settings.LogFormat, levelSet: settings.From["log-level"] != daemon.FromDefault}
	if err := setup.level.UnmarshalText([]byte(settings.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "flowd: log level %q: use debug, info, warn or error\n", settings.LogLevel)
		return 2
	}
	if file, ok := stderr.(*os.File); ok {
		setup.journal = stderrIsJournal(file, os.Getenv("JOURNAL_STREAM"))
		setup.background = !setup.journal && inBackgroundOnTerminal(file)
	}
	h, err := setup.handler(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 2
	}
	logger := slog.New(h)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *check {
		return checkConfig(ctx, cfg, cfgPath, settings, stderr)
	}

	// SIGHUP re-reads the config (as flowctl reload does). Caught from
	// here on: its default action would kill flowd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := daemon.Open(ctx, daemon.Options{Flags: f, Config: cfg, Logger: logger, Version: versionString()})
	if err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 1
	}
	go reloadOnHangup(ctx, d, hup)
	if err := d.Serve(ctx); err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 1
	}
	logger.Info("stopped cleanly")
	return 0
}

// reloadOnHangup reloads the config on each SIGHUP until ctx is done. The
// daemon logs what changed, or why the file was refused and the running
// config kept.
func reloadOnHangup(ctx context.Context, d *daemon.Daemon, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			_, _ = d.Reload(rctx)
			cancel()
		}
	}
}

func checkConfig(ctx context.Context, cfg *config.Config, path string, s daemon.Settings, out io.Writer) int {
	if err := cfg.Resolve(ctx, nil, 0); err != nil {
		fmt.Fprintf(out, "flowd: %v\n", err)
		return 1
	}
	if cfg.File == "" {
		fmt.Fprintf(out, "no config file at %s: flowd runs with no providers\n", path)
	} else {
		fmt.Fprintf(out, "%s: ok, %d provider(s)\n", cfg.File, len(cfg.Providers))
	}
	for _, p := range cfg.Providers {
		line := fmt.Sprintf("  %-12s %s (token endpoint auth: %s, from %s", p.Name, p.AuthURL, p.AuthMethod, p.AuthMethodFrom)
		switch {
		case p.RequireIssuer:
			line += "; iss required: " + p.Issuer
		case p.Issuer != "":
			line += "; iss checked when sent: " + p.Issuer
		}
		fmt.Fprintln(out, line+")")
		if p.DeviceAuthURL != "" {
			fmt.Fprintf(out, "  %-12s device transport (RFC 8628): %s\n", "", p.DeviceAuthURL)
		}
	}
	fmt.Fprintln(out, "start-up settings:")
	for _, line := range s.Describe() {
		fmt.Fprintln(out, "  "+line)
	}
	return 0
}

func versionString() string { return version.String() }
