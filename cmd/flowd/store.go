package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/server"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/etcdlog"
)

// storeFlags select the event log: the bbolt file in the state directory
// (default, nothing else needed) or an etcd cluster shared by several
// flowd replicas (docs/deploy.md).
type storeFlags struct {
	kind              string
	endpoints, prefix string
	cert, key, ca     string
	sealKeyFile       string
}

func (s *storeFlags) register(fs *flag.FlagSet, env func(k, def string) string) {
	fs.StringVar(&s.kind, "store", env("FLOWD_STORE", "bbolt"), "event log: bbolt (a file in the state directory) or etcd (a cluster shared by replicas; see docs/deploy.md) (env FLOWD_STORE)")
	fs.StringVar(&s.endpoints, "etcd-endpoints", env("FLOWD_ETCD_ENDPOINTS", ""), "etcd members' client URLs, comma-separated (env FLOWD_ETCD_ENDPOINTS)")
	fs.StringVar(&s.prefix, "etcd-prefix", env("FLOWD_ETCD_PREFIX", etcdlog.DefaultPrefix), "key prefix of flowd's log in etcd (env FLOWD_ETCD_PREFIX)")
	fs.StringVar(&s.cert, "etcd-cert", env("FLOWD_ETCD_CERT", ""), "client certificate for etcd, PEM (env FLOWD_ETCD_CERT)")
	fs.StringVar(&s.key, "etcd-key", env("FLOWD_ETCD_KEY", ""), "the client certificate's key, PEM (env FLOWD_ETCD_KEY)")
	fs.StringVar(&s.ca, "etcd-ca", env("FLOWD_ETCD_CA", ""), "CA of the etcd members' certificates, PEM (env FLOWD_ETCD_CA; default the system's roots when the endpoints are https)")
	fs.StringVar(&s.sealKeyFile, "seal-key-file", env("FLOWD_SEAL_KEY_FILE", ""), "with -store etcd: the 32-byte sealing key file every replica shares (env FLOWD_SEAL_KEY_FILE; else the key in base64 in $"+etcdlog.KeyEnv+")")
}

// check validates the flags before anything is opened.
func (s *storeFlags) check() error {
	switch s.kind {
	case "bbolt":
		return nil
	case "etcd":
		if strings.TrimSpace(s.endpoints) == "" {
			return errors.New("-store etcd needs -etcd-endpoints (the etcd members' client URLs, comma-separated)")
		}
		return nil
	}
	return fmt.Errorf("-store %q: use bbolt or etcd", s.kind)
}

// opener returns the daemon's log opener for the selected store.
func (s *storeFlags) opener(ctx context.Context) func(path string) (server.Log, error) {
	if s.kind != "etcd" {
		return openLog
	}
	return func(string) (server.Log, error) {
		key, err := etcdlog.KeyFrom(s.sealKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster mode: %w", err)
		}
		opts := etcdlog.Options{Prefix: s.prefix, Key: key}
		for _, ep := range strings.Split(s.endpoints, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				opts.Endpoints = append(opts.Endpoints, ep)
			}
		}
		tls := s.cert != "" || s.key != "" || s.ca != ""
		for _, ep := range opts.Endpoints {
			tls = tls || strings.HasPrefix(ep, "https://")
		}
		if tls {
			if opts.TLS, err = etcdlog.TLSFiles(s.cert, s.key, s.ca); err != nil {
				return nil, err
			}
		}
		return etcdlog.Open(ctx, opts)
	}
}

// openLog opens the bbolt event log. Its short lock timeout is what
// makes a second flowd on the same state directory exit at once, naming
// the database.
func openLog(path string) (server.Log, error) {
	return persist.Open(path, persist.Options{Timeout: 250 * time.Millisecond})
}
