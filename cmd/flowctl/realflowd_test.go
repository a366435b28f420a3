package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/daemon"
	"github.com/flowdhq/flowd/persist"
)

// realFlowd runs the real daemon (config, engine, bbolt log, HTTP API)
// from configTOML on a temporary state directory, and returns its socket.
// Its providers need not answer: starting a flow calls no one.
func realFlowd(t *testing.T, configTOML string, opts ...func(*daemon.Options)) (socket string, d *daemon.Daemon) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fr") // short: unix socket paths are limited to 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "flowd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(configTOML), 0o600))
	socket = filepath.Join(dir, "s")
	o := daemon.Options{
		Flags: daemon.Flags{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Socket: socket, Listen: "127.0.0.1:0"},
		OpenLog: func(path string) (daemon.Log, error) {
			return persist.Open(path, persist.Options{Timeout: time.Second})
		},
		Getenv: func(string) string { return "" },
	}
	for _, opt := range opts {
		opt(&o)
	}
	d, err = daemon.Open(context.Background(), o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return socket, d
}

// staticProvider is a config section for a provider with fixed endpoints
// nobody listens on.
const staticProvider = `
[providers.fake]
auth_url = "http://127.0.0.1:9/auth"
token_url = "http://127.0.0.1:9/token"
client_id = "cid"
client_secret = "cs"
`
