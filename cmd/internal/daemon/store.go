package daemon

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/etcdlog"
)

// Log is an event log flowd opens and closes: persist.DB or etcdlog.Log
// in production, memlog (with a no-op Close) in tests.
type Log interface {
	engine.Log
	io.Closer
}

// bboltLockTimeout is how long flowd waits for the database's lock: short,
// so a second flowd on the same state directory exits at once, naming the
// database and the flowd that holds it.
const bboltLockTimeout = 250 * time.Millisecond

// opener returns the log opener for the store s selects. ctx bounds the
// connection to etcd.
func (s Store) opener(ctx context.Context) func(path string) (Log, error) {
	if s.Kind != config.StoreEtcd {
		return func(path string) (Log, error) {
			return persist.Open(path, persist.Options{Timeout: bboltLockTimeout})
		}
	}
	return func(string) (Log, error) {
		key, err := etcdlog.KeyFrom(s.SealKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster mode: %w", err)
		}
		opts := etcdlog.Options{Prefix: s.EtcdPrefix, Key: key, Endpoints: s.EtcdEndpoints}
		tls := s.EtcdCert != "" || s.EtcdKey != "" || s.EtcdCA != ""
		for _, ep := range opts.Endpoints {
			tls = tls || strings.HasPrefix(ep, "https://")
		}
		if tls {
			if opts.TLS, err = etcdlog.TLSFiles(s.EtcdCert, s.EtcdKey, s.EtcdCA); err != nil {
				return nil, err
			}
		}
		return etcdlog.Open(ctx, opts)
	}
}
