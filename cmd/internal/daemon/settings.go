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
	// file is the config file's value ("" when the file leaves it out, or
	// there is no file); nil for settings a file cannot hold.
	file func(*config.Config) string
	// def is the default, given what is settled before it.
	def func(s *Settings) string
	set func(s *Settings, v string)
}

// settings are in the order they settle: the socket's default follows
// the state directory actually used.
var settings = []setting{
	{"state-dir", wire.StateDirEnv, func(c *config.Config) string { return c.StateDir },
		func(*Settings) string { return wire.DefaultStateDir() }, func(s *Settings, v string) { s.StateDir = v }},
	{"socket", wire.SocketEnv, func(c *config.Config) string { return c.Socket },
		func(s *Settings) string { return wire.SocketPathIn(s.StateDir) }, func(s *Settings, v string) { s.Socket = v }},
	{"listen", "FLOWD_LISTEN", func(c *config.Config) string {
		// Parse fills the default in: only a listen other than it is the file's.
		if c.Listen == config.DefaultListen {
			return ""
		}
		return c.Listen
	}, func(*Settings) string { return config.DefaultListen }, func(s *Settings, v string) { s.Listen = v }},
	{"log-level", "FLOWD_LOG_LEVEL", nil, constant("info"), func(s *Settings, v string) { s.LogLevel = v }},
	{"log-format", "FLOWD_LOG_FORMAT", nil, constant("text"), func(s *Settings, v string) { s.LogFormat = v }},
	{"store", "FLOWD_STORE", func(c *config.Config) string { return c.Store },
		constant(config.StoreBbolt), func(s *Settings, v string) { s.Store.Kind = v }},
	{"etcd-endpoints", "FLOWD_ETCD_ENDPOINTS", func(c *config.Config) string { return strings.Join(c.Etcd.Endpoints, ",") },
		constant(""), func(s *Settings, v string) { s.Store.EtcdEndpoints = splitList(v) }},
	{"etcd-prefix", "FLOWD_ETCD_PREFIX", func(c *config.Config) string { return c.Etcd.Prefix },
		constant(etcdlog.DefaultPrefix), func(s *Settings, v string) { s.Store.EtcdPrefix = v }},
	{"etcd-cert", "FLOWD_ETCD_CERT", func(c *config.Config) string { return c.Etcd.Cert },
		constant(""), func(s *Settings, v string) { s.Store.EtcdCert = v }},
	{"etcd-key", "FLOWD_ETCD_KEY", func(c *config.Config) string { return c.Etcd.Key },
		constant(""), func(s *Settings, v string) { s.Store.EtcdKey = v }},
	{"etcd-ca", "FLOWD_ETCD_CA", func(c *config.Config) string { return c.Etcd.CA },
		constant(""), func(s *Settings, v string) { s.Store.EtcdCA = v }},
	{"seal-key-file", "FLOWD_SEAL_KEY_FILE", func(c *config.Config) string { return c.Etcd.SealKeyFile },
		constant(""), func(s *Settings, v string) { s.Store.SealKeyFile = v }},
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
	given := flagValues(flags)
	for _, st := range settings {
		v, from := given[st.flag], FromFlag
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
			return fileKey(flag) + " in the config file"
		}
	}
	return "the default"
}

// fileKey is the config key of the setting whose flag is flag.
func fileKey(flag string) string {
	switch flag {
	case "seal-key-file":
		return "etcd.seal_key_file"
	case "etcd-endpoints", "etcd-prefix", "etcd-cert", "etcd-key", "etcd-ca":
		return "etcd." + strings.TrimPrefix(flag, "etcd-")
	}
	return strings.ReplaceAll(flag, "-", "_")
}

// flagValues maps each setting's flag name to its value in flags.
func flagValues(f Flags) map[string]string {
	return map[string]string{
		"state-dir": f.StateDir, "socket": f.Socket, "listen": f.Listen,
		"log-level": f.LogLevel, "log-format": f.LogFormat, "store": f.Store,
		"etcd-endpoints": f.EtcdEndpoints, "etcd-prefix": f.EtcdPrefix, "etcd-cert": f.EtcdCert,
		"etcd-key": f.EtcdKey, "etcd-ca": f.EtcdCA, "seal-key-file": f.SealKeyFile,
	}
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
// line each, for flowd -check-config.
func (s Settings) Describe() []string {
	line := func(name, v string) string {
		return fmt.Sprintf("%-15s %s (%s)", name, v, s.From[name])
	}
	out := []string{line("config", s.ConfigPath), line("state-dir", s.StateDir), line("socket", s.Socket),
		line("listen", s.Listen), line("store", s.Store.Kind)}
	if s.Store.Kind == config.StoreEtcd {
		out = append(out, line("etcd-endpoints", strings.Join(s.Store.EtcdEndpoints, ",")), line("etcd-prefix", s.Store.EtcdPrefix))
		for _, kv := range [][2]string{{"etcd-cert", s.Store.EtcdCert}, {"etcd-key", s.Store.EtcdKey}, {"etcd-ca", s.Store.EtcdCA}, {"seal-key-file", s.Store.SealKeyFile}} {
			if kv[1] != "" {
				out = append(out, line(kv[0], kv[1]))
			}
		}
	}
	return append(out, line("log-level", s.LogLevel), line("log-format", s.LogFormat))
}
