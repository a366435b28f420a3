package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/pidfile"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/memlog"
)

// lockingLogs is an OpenLog that, like persist, refuses a second opener of
// one path with an error naming it.
type lockingLogs struct {
	mu   sync.Mutex
	open map[string]bool
}

type closingLog struct {
	*memlog.Log
	release func()
}

func (c closingLog) Close() error { c.release(); return nil }

func (l *lockingLogs) openLog(path string) (Log, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = map[string]bool{}
	}
	if l.open[path] {
		return nil, fmt.Errorf("open event log %s: %w", path, persist.ErrLocked)
	}
	l.open[path] = true
	return closingLog{Log: memlog.New(), release: func() { l.mu.Lock(); delete(l.open, path); l.mu.Unlock() }}, nil
}

type daemonDirs struct{ state, sock, cfg string }

func newDirs(t *testing.T) daemonDirs {
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return daemonDirs{state: filepath.Join(dir, "state"), sock: filepath.Join(dir, "s"), cfg: filepath.Join(dir, "none.toml")}
}

func (d daemonDirs) opts(logs *lockingLogs) Options {
	return Options{
		Flags:   Flags{StateDir: d.state, Socket: d.sock, Listen: "127.0.0.1:0"},
		OpenLog: logs.openLog, Getenv: func(string) string { return "" }, ShutdownGrace: 5 * time.Second,
	}
}

func openDaemon(t *testing.T, o Options) *Daemon {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", filepath.Dir(o.StateDir)) // no config file there: no providers
	d, err := Open(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestDaemonCreatesPrivateStateAndServes(t *testing.T) {
	dirs := newDirs(t)
	d := openDaemon(t, dirs.opts(&lockingLogs{}))
	for path, want := range map[string]os.FileMode{dirs.state: 0o700, dirs.sock: 0o600, d.ServiceTokenPath: 0o600} {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, want, fi.Mode().Perm(), path)
	}
	tok, err := serviceToken(d.ServiceTokenPath, false)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(tok), minServiceToken)

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", dirs.sock)
	}}}
	require.Eventually(t, func() bool {
		r, err := c.Get("http://flowd/v1/health")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	c.CloseIdleConnections()
	cancel()
	require.NoError(t, <-served)
	_, err = os.Stat(dirs.sock)
	assert.True(t, os.IsNotExist(err), "the socket is removed on shutdown")
}

func TestSecondDaemonOnSameStateDirFailsNamingThePath(t *testing.T) {
	logs := &lockingLogs{}
	dirs := newDirs(t)
	openDaemon(t, dirs.opts(logs))
	o := dirs.opts(logs)
	o.Socket = dirs.sock + "2"
	_, err := Open(context.Background(), o)
	require.Error(t, err)
	// The message names the running flowd: its process and its socket.
	assert.Contains(t, err.Error(), fmt.Sprintf("another flowd (pid %d, socket %s)", os.Getpid(), dirs.sock))
	assert.Contains(t, err.Error(), "flowctl reload")
	assert.Contains(t, err.Error(), dirs.state)
}

// A flowd killed with SIGKILL leaves its pid file; the next one starts,
// and one refused by a lock someone else holds does not name a dead pid.
func TestStalePidFileIsReplaced(t *testing.T) {
	dirs := newDirs(t)
	require.NoError(t, os.MkdirAll(dirs.state, 0o700))
	require.NoError(t, pidfile.Write(dirs.state, 1<<30, "/gone.sock"))
	d := openDaemon(t, dirs.opts(&lockingLogs{}))
	r, err := pidfile.Read(dirs.state)
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), r.PID)
	assert.Equal(t, dirs.sock, r.Socket)
	require.NoError(t, d.Close())
	_, err = pidfile.Read(dirs.state)
	assert.True(t, os.IsNotExist(err), "Close removes the pid file")

	require.NoError(t, pidfile.Write(dirs.state, 1<<30, "/gone.sock"))
	err = lockedError(dirs.state, filepath.Join(dirs.state, DBFile), persist.ErrLocked)
	assert.NotContains(t, err.Error(), "/gone.sock")
	assert.Contains(t, err.Error(), filepath.Join(dirs.state, DBFile))
}

func TestSocketInUseFails(t *testing.T) {
	logs := &lockingLogs{}
	dirs := newDirs(t)
	openDaemon(t, dirs.opts(logs))
	o := dirs.opts(logs)
	o.StateDir = dirs.state + "2"
	_, err := Open(context.Background(), o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "another flowd is already serving on socket "+dirs.sock)
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dirs := newDirs(t)
	l, err := net.Listen("unix", dirs.sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves the file behind, as a crash would
	openDaemon(t, dirs.opts(&lockingLogs{}))
}

func TestPortTakenNamesThePort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	dirs := newDirs(t)
	o := dirs.opts(&lockingLogs{})
	o.Listen = taken.Addr().String()
	_, port, _ := net.SplitHostPort(o.Listen)
	_, err = Open(context.Background(), o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "loopback port "+port)
	_, err = os.Stat(dirs.sock)
	assert.True(t, os.IsNotExist(err), "a failed start leaves no socket behind")
}

func TestRefusesGroupReadableStateFiles(t *testing.T) {
	for _, name := range []string{"flowd.db.key", DBFile, ServiceTokenFile} {
		t.Run(name, func(t *testing.T) {
			dirs := newDirs(t)
			require.NoError(t, os.MkdirAll(dirs.state, 0o700))
			p := filepath.Join(dirs.state, name)
			require.NoError(t, os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef0123"), 0o600))
			require.NoError(t, os.Chmod(p, 0o640))
			_, err := Open(context.Background(), dirs.opts(&lockingLogs{}))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "chmod 600 "+p)
		})
	}
	t.Run("state dir", func(t *testing.T) {
		dirs := newDirs(t)
		require.NoError(t, os.MkdirAll(dirs.state, 0o700))
		require.NoError(t, os.Chmod(dirs.state, 0o755))
		_, err := Open(context.Background(), dirs.opts(&lockingLogs{}))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "chmod 700 "+dirs.state)
	})
}

func TestShortServiceTokenRefused(t *testing.T) {
	dirs := newDirs(t)
	require.NoError(t, os.MkdirAll(dirs.state, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dirs.state, ServiceTokenFile), []byte("short\n"), 0o600))
	_, err := Open(context.Background(), dirs.opts(&lockingLogs{}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shorter than")
}

func TestInvalidConfigStopsStart(t *testing.T) {
	dirs := newDirs(t)
	cfg := filepath.Join(filepath.Dir(dirs.state), "flowd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte("[providers.github]\nclient_secret = \"x\"\n"), 0o600))
	o := dirs.opts(&lockingLogs{})
	o.ConfigPath = cfg
	_, err := Open(context.Background(), o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), cfg)
	assert.Contains(t, err.Error(), "providers.github.client_id")
	assert.NotContains(t, err.Error(), "\"x\"")
}

func TestNonLoopbackListenRefused(t *testing.T) {
	dirs := newDirs(t)
	o := dirs.opts(&lockingLogs{})
	o.Listen = "0.0.0.0:0"
	_, err := Open(context.Background(), o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a loopback address")
}

// docs/config.md: without XDG_RUNTIME_DIR the socket is flowd.sock in the
// state directory, the one given, not the default one.
func TestDefaultSocketFollowsTheStateDir(t *testing.T) {
	dirs := newDirs(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("FLOWD_SOCKET", "")
	t.Setenv("HOME", filepath.Dir(dirs.state))
	o := dirs.opts(&lockingLogs{})
	o.Socket = ""
	d := openDaemon(t, o)
	assert.Equal(t, filepath.Join(dirs.state, "flowd.sock"), d.SocketPath)
}

// The store named in the config file is the one flowd opens, and the
// environment overrides it: with store = "etcd" and no sealing key, Open
// refuses before it touches etcd; FLOWD_STORE=bbolt opens the file.
func TestStoreChosenByConfigFileAndEnvironment(t *testing.T) {
	dirs := newDirs(t)
	require.NoError(t, os.WriteFile(dirs.cfg, []byte("store = \"etcd\"\n[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n"), 0o600))
	o := dirs.opts(nil)
	o.OpenLog = nil // the store the settings choose
	o.Flags.ConfigPath = dirs.cfg
	_, err := Open(context.Background(), o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cluster mode", "the file's store = \"etcd\" was used")
	assert.Contains(t, err.Error(), "no sealing key")

	o.Getenv = func(k string) string {
		if k == "FLOWD_STORE" {
			return "bbolt"
		}
		return ""
	}
	d, err := Open(context.Background(), o)
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, "bbolt", d.Settings.Store.Kind)
	assert.Equal(t, FromEnv, d.Settings.From["store"])
	assert.FileExists(t, filepath.Join(dirs.state, DBFile), "the bbolt file in the state directory")
}
