package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/persist/etcdlog"
)

// env is a fake environment.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// fileWith parses a config file's contents, as flowd would read them.
func fileWith(t *testing.T, toml string) *config.Config {
	t.Helper()
	c, err := config.Parse("flowd.toml", []byte(toml), env{}.get)
	require.NoError(t, err)
	return c
}

// Every start-up setting settles the same way: a flag given wins over its
// environment variable, which wins over the config file, which wins over
// the default. Each setting is checked at every layer, so one read from
// the wrong place (or forgotten in one) fails here.
func TestSettleOrderFlagEnvFileDefault(t *testing.T) {
	file := fileWith(t, `
state_dir = "/file/state"
socket = "/file/flowd.sock"
listen = "127.0.0.1:7001"
store = "etcd"
[etcd]
endpoints = ["https://file-1:2379", "https://file-2:2379"]
prefix = "file/"
cert = "/file/cert.pem"
key = "/file/key.pem"
ca = "/file/ca.pem"
seal_key_file = "/file/seal.key"
`)
	type row struct {
		flag, env string
		set       func(*Flags, string)
		get       func(Settings) string
		// file and def are what the layers below the environment give.
		file, def string
		// flagV and envV are valid values for the two upper layers.
		flagV, envV string
	}
	rows := []row{
		{"state-dir", "FLOWD_STATE_DIR", func(f *Flags, v string) { f.StateDir = v }, func(s Settings) string { return s.StateDir }, "/file/state", wire.DefaultStateDir(), "/flag/state", "/env/state"},
		{"socket", "FLOWD_SOCKET", func(f *Flags, v string) { f.Socket = v }, func(s Settings) string { return s.Socket }, "/file/flowd.sock", "", "/flag/s", "/env/s"},
		{"listen", "FLOWD_LISTEN", func(f *Flags, v string) { f.Listen = v }, func(s Settings) string { return s.Listen }, "127.0.0.1:7001", config.DefaultListen, "127.0.0.1:7003", "127.0.0.1:7002"},
		{"store", "FLOWD_STORE", func(f *Flags, v string) { f.Store = v }, func(s Settings) string { return s.Store.Kind }, "etcd", "bbolt", "bbolt", "etcd"},
		{"etcd-endpoints", "FLOWD_ETCD_ENDPOINTS", func(f *Flags, v string) { f.EtcdEndpoints = v }, func(s Settings) string { return strings.Join(s.Store.EtcdEndpoints, ",") }, "https://file-1:2379,https://file-2:2379", "", "https://flag:2379", "https://env-1:2379,https://env-2:2379"},
		{"etcd-prefix", "FLOWD_ETCD_PREFIX", func(f *Flags, v string) { f.EtcdPrefix = v }, func(s Settings) string { return s.Store.EtcdPrefix }, "file/", etcdlog.DefaultPrefix, "flag/", "env/"},
		{"etcd-cert", "FLOWD_ETCD_CERT", func(f *Flags, v string) { f.EtcdCert = v }, func(s Settings) string { return s.Store.EtcdCert }, "/file/cert.pem", "", "/flag/cert.pem", "/env/cert.pem"},
		{"etcd-key", "FLOWD_ETCD_KEY", func(f *Flags, v string) { f.EtcdKey = v }, func(s Settings) string { return s.Store.EtcdKey }, "/file/key.pem", "", "/flag/key.pem", "/env/key.pem"},
		{"etcd-ca", "FLOWD_ETCD_CA", func(f *Flags, v string) { f.EtcdCA = v }, func(s Settings) string { return s.Store.EtcdCA }, "/file/ca.pem", "", "/flag/ca.pem", "/env/ca.pem"},
		{"seal-key-file", "FLOWD_SEAL_KEY_FILE", func(f *Flags, v string) { f.SealKeyFile = v }, func(s Settings) string { return s.Store.SealKeyFile }, "/file/seal.key", "", "/flag/seal.key", "/env/seal.key"},
		{"log-level", "FLOWD_LOG_LEVEL", func(f *Flags, v string) { f.LogLevel = v }, func(s Settings) string { return s.LogLevel }, "", "info", "debug", "warn"},
		{"log-format", "FLOWD_LOG_FORMAT", func(f *Flags, v string) { f.LogFormat = v }, func(s Settings) string { return s.LogFormat }, "", "text", "json", "json"},
	}
	for _, r := range rows {
		t.Run(r.flag, func(t *testing.T) {
			settle := func(flags Flags, e env, file *config.Config) Settings {
				t.Helper()
				s, err := Settle(flags, e.get, file)
				require.NoError(t, err)
				return s
			}
			var flags Flags
			r.set(&flags, r.flagV)
			e := env{r.env: r.envV}

			s := settle(flags, e, file)
			assert.Equal(t, r.flagV, r.get(s), "the flag wins over environment and file")
			assert.Equal(t, FromFlag, s.From[r.flag])

			s = settle(Flags{}, e, file)
			assert.Equal(t, r.envV, r.get(s), "the environment wins over the file")
			assert.Equal(t, FromEnv, s.From[r.flag])

			if r.file != "" {
				s = settle(Flags{}, env{}, file)
				assert.Equal(t, r.file, r.get(s), "the file wins over the default")
				assert.Equal(t, FromFile, s.From[r.flag])
			}

			s = settle(Flags{}, env{}, nil)
			if r.flag == "socket" {
				// The default socket follows the state directory settled.
				assert.Equal(t, wire.SocketPathIn(s.StateDir), s.Socket)
			} else {
				assert.Equal(t, r.def, r.get(s), "with nothing given, the default")
			}
			assert.Equal(t, FromDefault, s.From[r.flag])
		})
	}
}

// The default socket is in the state directory actually used, whichever
// layer set it (docs/config.md), when XDG_RUNTIME_DIR does not say.
func TestSettleDefaultSocketFollowsStateDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "")
	s, err := Settle(Flags{}, env{"FLOWD_STATE_DIR": "/srv/flowd"}.get, fileWith(t, `state_dir = "/file/state"`))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join("/srv/flowd", "flowd.sock"), s.Socket)
}

// The config path is the one setting a file cannot hold: flag, then
// environment, then the default, which alone may be missing.
func TestConfigPathOrder(t *testing.T) {
	p, missingOK, from := ConfigPath(Flags{ConfigPath: "/flag.toml"}, env{"FLOWD_CONFIG": "/env.toml"}.get)
	assert.Equal(t, "/flag.toml", p)
	assert.False(t, missingOK, "a file named on the command line must exist")
	assert.Equal(t, FromFlag, from)
	p, missingOK, from = ConfigPath(Flags{}, env{"FLOWD_CONFIG": "/env.toml"}.get)
	assert.Equal(t, "/env.toml", p)
	assert.False(t, missingOK)
	assert.Equal(t, FromEnv, from)
	p, missingOK, from = ConfigPath(Flags{}, env{}.get)
	assert.Equal(t, config.DefaultPath(), p)
	assert.True(t, missingOK, "the default file may be missing")
	assert.Equal(t, FromDefault, from)
}

// A refused setting names the spelling it was given in, so the user
// knows which to fix: the flag, the variable or the config key.
func TestSettleRefusalNamesTheLayer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags Flags
		env   env
		file  string
		want  []string
	}{
		{"store by flag", Flags{Store: "postgres"}, env{}, "", []string{`store "postgres" (-store)`, "use bbolt", "or etcd"}},
		{"store by env", Flags{}, env{"FLOWD_STORE": "mysql"}, "", []string{`store "mysql" (FLOWD_STORE)`}},
		{"etcd without endpoints, from the file", Flags{}, env{}, `store = "etcd"`, []string{"store etcd (store in the config file)", "-etcd-endpoints", "FLOWD_ETCD_ENDPOINTS", "[etcd]"}},
		{"log level by env", Flags{}, env{"FLOWD_LOG_LEVEL": "loud"}, "", []string{`log level "loud" (FLOWD_LOG_LEVEL)`, "debug, info, warn or error"}},
		{"log format by flag", Flags{LogFormat: "xml"}, env{}, "", []string{`log format "xml" (-log-format)`, "text or json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var file *config.Config
			if tc.file != "" {
				file = fileWith(t, tc.file)
			}
			_, err := Settle(tc.flags, tc.env.get, file)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// The endpoints given by flag or environment are a comma-separated list;
// blanks around and between items are dropped.
func TestSettleSplitsEndpoints(t *testing.T) {
	s, err := Settle(Flags{Store: "etcd", EtcdEndpoints: " https://a:2379, ,https://b:2379 "}, env{}.get, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a:2379", "https://b:2379"}, s.Store.EtcdEndpoints)
}
