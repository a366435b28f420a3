package daemon

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/persist/etcdlog"
)

// Flags are the start-up settings given on flowd's command line: "" is a
// flag not given. Each has an environment variable and, but the config
// file's own path and the log settings, a config key (docs/config.md,
// "Where things are"); Settle decides between them.
type Flags struct {
	ConfigPath    string
	StateDir      string
	Socket        string
	Listen        string
	LogLevel      string
	LogFormat     string
	Store         string
	EtcdEndpoints string // comma-separated
	EtcdPrefix    string
	EtcdCert      string
	EtcdKey       string
	EtcdCA        string
	SealKeyFile   string
}

// Source says which layer a settled value came from.
type Source string

// The layers, strongest first.
const (
	FromFlag    Source = "flag"
	FromEnv     Source = "environment"
	FromFile    Source = "config file"
	FromDefault Source = "default"
)

// Settings are flowd's start-up settings once settled.
type Settings struct {
	ConfigPath string
	StateDir   string
	Socket     string
	Listen     string
	LogLevel   string
	LogFormat  string
	Store      Store
	// From says where each setting came from, by its flag's name
	// ("state-dir", "etcd-endpoints", ...), for -check-config and logs.
	From map[string]Source
}

// Store selects the event log: the bbolt file in the state directory, or
// an etcd cluster shared by several flowd replicas (docs/deploy.md).
type Store struct {
	Kind          string // config.StoreBbolt or config.StoreEtcd
	EtcdEndpoints []string
	EtcdPrefix    string
	EtcdCert      string
	EtcdKey       string
	EtcdCA        string
	SealKeyFile   string
}

// setting is one start-up setting in its three spellings.
type setting struct {
	flag, env string
	// key is its config key ("" for settings a file cannot hold), and
	// file its value in the file ("" when the file leaves it out).
	key  string
	file func(*config.Config) string
	// given is the flag's value in Flags.
	given func(Flags) string
	// def is the default, given what is settled before it.
	def func(s *Settings) string
	set func(s *Settings, v string)
	get func(s Settings) string
}

// settings are in the order they settle: the socket's default follows
// the state directory actually used.
var settings = []setting{
	{flag: "state-dir", env: wire.StateDirEnv, key: "state_dir", file: func(c *config.Config) string { return c.StateDir },
		given: func(f Flags) string { return f.StateDir }, def: func(*Settings) string { return wire.DefaultStateDir() },
		set: func(s *Settings, v string) { s.StateDir = v }, get: func(s Settings) string { return s.StateDir }},
	{flag: "socket", env: wire.SocketEnv, key: "socket", file: func(c *config.Config) string { return c.Socket },
		given: func(f Flags) string { return f.Socket }, def: func(s *Settings) string { return wire.SocketPathIn(s.StateDir) },
		set: func(s *Settings, v string) { s.Socket = v }, get: func(s Settings) string { return s.Socket }},
	{flag: "listen", env: "FLOWD_LISTEN", key: "listen", file: func(c *config.Config) string {
		// Parse fills the default in: only a listen other than it is the file's.
		if c.Listen == config.DefaultListen {
			return ""
		}
		return c.Listen
	}, given: func(f Flags) string { return f.Listen }, def: constant(config.DefaultListen),
		set: func(s *Settings, v string) { s.Listen = v }, get: func(s Settings) string { return s.Listen }},
	{flag: "store", env: "FLOWD_STORE", key: "store", file: func(c *config.Config) string { return c.Store },
		given: func(f Flags) string { return f.Store }, def: constant(config.StoreBbolt),
		set: func(s *Settings, v string) { s.Store.Kind = v }, get: func(s Settings) string { return s.Store.Kind }},
	{flag: "etcd-endpoints", env: "FLOWD_ETCD_ENDPOINTS", key: "etcd.endpoints", file: func(c *config.Config) string { return strings.Join(c.Etcd.Endpoints, ",") },
		given: func(f Flags) string { return f.EtcdEndpoints }, def: constant(""),
		set: func(s *Settings, v string) { s.Store.EtcdEndpoints = splitList(v) }, get: func(s Settings) string { return strings.Join(s.Store.EtcdEndpoints, ",") }},
	{flag: "etcd-prefix", env: "FLOWD_ETCD_PREFIX", key: "etcd.prefix", file: func(c *config.Config) string { return c.Etcd.Prefix },
		given: func(f Flags) string { return f.EtcdPrefix }, def: constant(etcdlog.DefaultPrefix),
		set: func(s *Settings, v string) { s.Store.EtcdPrefix = v }, get: func(s Settings) string { return s.Store.EtcdPrefix }},
	{flag: "etcd-cert", env: "FLOWD_ETCD_CERT", key: "etcd.cert", file: func(c *config.Config) string { return c.Etcd.Cert },
		given: func(f Flags) string { return f.EtcdCert }, def: constant(""),
		set: func(s *Settings, v string) { s.Store.EtcdCert = v }, get: func(s Settings) string { return s.Store.EtcdCert }},
	{flag: "etcd-key", env: "FLOWD_ETCD_KEY", key: "etcd.key", file: func(c *config.Config) string { return c.Etcd.Key },
		given: func(f Flags) string { return f.EtcdKey }, def: constant(""),
		set: func(s *Settings, v string) { s.Store.EtcdKey = v }, get: func(s Settings) string { return s.Store.EtcdKey }},
	{flag: "etcd-ca", env: "FLOWD_ETCD_CA", key: "etcd.ca", file: func(c *config.Config) string { return c.Etcd.CA },
		given: func(f Flags) string { return f.EtcdCA }, def: constant(""),
		set: func(s *Settings, v string) { s.Store.EtcdCA = v }, get: func(s Settings) string { return s.Store.EtcdCA }},
	{flag: "seal-key-file", env: "FLOWD_SEAL_KEY_FILE", key: "etcd.seal_key_file", file: func(c *config.Config) string { return c.Etcd.SealKeyFile },
		given: func(f Flags) string { return f.SealKeyFile }, def: constant(""),
		set: func(s *Settings, v string) { s.Store.SealKeyFile = v }, get: func(s Settings) string { return s.Store.SealKeyFile }},
	{flag: "log-level", env: "FLOWD_LOG_LEVEL", given: func(f Flags) string { return f.LogLevel }, def: constant("info"),
		set: func(s *Settings, v string) { s.LogLevel = v }, get: func(s Settings) string { return s.LogLevel }},
	{flag: "log-format", env: "FLOWD_LOG_FORMAT", given: func(f Flags) string { return f.LogFormat }, def: constant("text"),
		set: func(s *Settings, v string) { s.LogFormat = v }, get: func(s Settings) string { return s.LogFormat }},
}

func constant(v string) func(*Settings) string { return func(*Settings) string { return v } }

// ConfigPath settles the config file's path: -config, else FLOWD_CONFIG,
// else config.DefaultPath(). missingOK is true for the default path only:
// a file named by flag or environment must exist.
func ConfigPath(flags Flags, getenv func(string) string) (path string, missingOK bool, from Source) {
	switch {
	case flags.ConfigPath != "":
		return flags.ConfigPath, false, FromFlag
	case getenv("FLOWD_CONFIG") != "":
		return getenv("FLOWD_CONFIG"), false, FromEnv
	}
	return config.DefaultPath(), true, FromDefault
}

// Settle decides each start-up setting: a flag given wins over the
// environment (getenv), which wins over the config file (file, nil for
// none), which wins over the default. It checks what the config file did
// not (flags and environment) and names the layer of a value it refuses.
func Settle(flags Flags, getenv func(string) string, file *config.Config) (Settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s := Settings{From: map[string]Source{}}
	s.ConfigPath, _, s.From["config"] = ConfigPath(flags, getenv)
	for _, st := range settings {
		v, from := st.given(flags), FromFlag
		if v == "" {
			v, from = getenv(st.env), FromEnv
		}
		if v == "" && st.file != nil && file != nil {
			v, from = st.file(file), FromFile
		}
		if v == "" {
			v, from = st.def(&s), FromDefault
		}
		st.set(&s, v)
		s.From[st.flag] = from
	}
	if err := s.check(); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// check refuses a store flowd cannot open, naming where the value came from.
func (s Settings) check() error {
	switch s.Store.Kind {
	case config.StoreBbolt:
	case config.StoreEtcd:
		if len(s.Store.EtcdEndpoints) == 0 {
			return fmt.Errorf("store etcd (%s) needs the etcd members' client URLs: -etcd-endpoints, FLOWD_ETCD_ENDPOINTS or endpoints in the config's [etcd] table", s.spelling("store"))
		}
	default:
		return fmt.Errorf("store %q (%s): use bbolt (a file in the state directory) or etcd (a cluster shared by replicas)", s.Store.Kind, s.spelling("store"))
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(s.LogLevel)) {
		return fmt.Errorf("log level %q (%s): use debug, info, warn or error", s.LogLevel, s.spelling("log-level"))
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		return fmt.Errorf("log format %q (%s): use text or json", s.LogFormat, s.spelling("log-format"))
	}
	return nil
}

// spelling names how the setting called flag was given: "-store",
// "FLOWD_STORE", "store in the config file".
func (s Settings) spelling(flag string) string {
	for _, st := range settings {
		if st.flag != flag {
			continue
		}
		switch s.From[flag] {
		case FromFlag:
			return "-" + flag
		case FromEnv:
			return st.env
		case FromFile:
			return st.key + " in the config file"
		}
	}
	return "the default"
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Describe lists each setting with its value and where it came from, one
// line each, for flowd -check-config: the etcd settings only for the etcd
// store, and those without a value not at all.
func (s Settings) Describe() []string {
	out := []string{fmt.Sprintf("%-15s %s (%s)", "config", s.ConfigPath, s.From["config"])}
	for _, st := range settings {
		v := st.get(s)
		if strings.HasPrefix(st.key, "etcd.") && (s.Store.Kind != config.StoreEtcd || v == "") {
			continue
		}
		out = append(out, fmt.Sprintf("%-15s %s (%s)", st.flag, v, s.From[st.flag]))
	}
	return out
}
