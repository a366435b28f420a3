// Command flowd is the daemon that owns every OAuth connect flow. It runs
// with no flags on embedded defaults; see `flowd -help-config` (docs/config.md)
// and `flowd -h`.
//
// This file only wires flags, environment and signals to
// cmd/internal/server, where everything testable lives.
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
	"github.com/flowdhq/flowd/cmd/internal/server"
	"github.com/flowdhq/flowd/cmd/internal/version"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/docs"
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
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	cfgPath := fs.String("config", env("FLOWD_CONFIG", ""), "config file (env FLOWD_CONFIG; default "+config.DefaultPath()+", optional)")
	stateDir := fs.String("state-dir", env("FLOWD_STATE_DIR", ""), "state directory for the database, key and service token (env FLOWD_STATE_DIR; default "+wire.DefaultStateDir()+")")
	socket := fs.String("socket", os.Getenv(wire.SocketEnv), "API unix socket (env "+wire.SocketEnv+"; default $XDG_RUNTIME_DIR/flowd.sock, else flowd.sock in the state directory: "+wire.DefaultSocketPath()+")")
	listen := fs.String("listen", env("FLOWD_LISTEN", ""), "loopback listener for /oauth/callback and the gateway relay (env FLOWD_LISTEN; default "+config.DefaultListen+")")
	logLevel := fs.String("log-level", env("FLOWD_LOG_LEVEL", "info"), "debug, info, warn or error (env FLOWD_LOG_LEVEL)")
	logFormat := fs.String("log-format", env("FLOWD_LOG_FORMAT", "text"), "text or json (env FLOWD_LOG_FORMAT)")
	check := fs.Bool("check-config", false, "load the config (and discover OIDC issuers), print the providers, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	helpConfig := fs.Bool("help-config", false, "print the configuration reference (docs/config.md) and a commented example file, and exit")
	var store storeFlags
	store.register(fs, env)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: flowd [flags]\n\nflowd owns OAuth connect flows; flowctl talks to it over the unix socket.\nWith no flags it runs on embedded defaults.\n\nFlags:\n")
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
	if err := store.check(); err != nil {
		fmt.Fprintf(stderr, "flowd: %v\n", err)
		return 2
	}
	setup := logSetup{format: *logFormat, levelSet: levelSet(fs, "log-level", "FLOWD_LOG_LEVEL")}
	if err := setup.level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "flowd: -log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	if f, ok := stderr.(*os.File); ok {
		setup.journal = stderrIsJournal(f, os.Getenv("JOURNAL_STREAM"))
		setup.background = !setup.journal && inBackgroundOnTerminal(f)
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
		return checkConfig(ctx, *cfgPath, stderr)
	}

	// SIGHUP re-reads the config (as flowctl reload does). Caught from
	// here on: its default action would kill flowd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := server.Open(ctx, server.Options{
		ConfigPath: *cfgPath, StateDir: *stateDir, Socket: *socket, Listen: *listen,
		Logger: logger, Version: versionString(),
		OpenLog: store.opener(ctx),
	})
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
func reloadOnHangup(ctx context.Context, d *server.Daemon, hup <-chan os.Signal) {
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

func checkConfig(ctx context.Context, path string, out io.Writer) int {
	missingOK := path == ""
	if path == "" {
		path = config.DefaultPath()
	}
	cfg, err := config.Load(path, missingOK, nil)
	if err == nil {
		err = cfg.Resolve(ctx, nil, 0)
	}
	if err != nil {
		fmt.Fprintf(out, "flowd: %v\n", err)
		return 1
	}
	if cfg.File == "" {
		fmt.Fprintf(out, "no config file at %s: flowd runs with no providers\n", path)
		return 0
	}
	fmt.Fprintf(out, "%s: ok, %d provider(s)\n", cfg.File, len(cfg.Providers))
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
	return 0
}

// levelSet reports whether the user chose the log level, by flag or
// environment.
func levelSet(fs *flag.FlagSet, flagName, envName string) bool {
	set := os.Getenv(envName) != ""
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == flagName })
	return set
}

func versionString() string { return version.String() }
