package cluster_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
)

// No goleak here, unlike the engine's tests: embedded etcd members leave
// peer connections and gRPC goroutines that wind down on their own time.
// The engine's watch goroutine is checked for leaks in the engine's tests.

// requestTimeout is short so that a lost quorum is reported within a
// test's patience.
const requestTimeout = 2 * time.Second

// rig is a test's cluster: an etcd cluster, a fake provider, and replicas.
type rig struct {
	t      testing.TB
	etcd   *etcdtest.Cluster
	prov   *oauthtest.Server
	prefix string
	key    []byte
	cfg    engine.Config
}

var prefixes atomic.Int64

func newRig(t *testing.T, members int) *rig {
	t.Helper()
	return newRigOn(t, etcdtest.Start(t, members, etcdtest.Options{}))
}

// newRigOn is a rig on a running cluster, under a prefix of its own.
func newRigOn(t testing.TB, c *etcdtest.Cluster) *rig {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	r := &rig{t: t, etcd: c, prov: oauthtest.New(t, oauthtest.Options{}), key: key,
		prefix: fmt.Sprintf("cluster-test/%d/", prefixes.Add(1))}
	r.cfg = engine.Config{
		Providers: []engine.Provider{{Name: "gh", AuthURL: r.prov.AuthURL, TokenURL: r.prov.TokenURL,
			AuthMethod: engine.AuthMethod(r.prov.AuthMethod), ClientID: r.prov.ClientID, ClientSecret: r.prov.ClientSecret}},
		TTL:             time.Minute,
		ExchangeTimeout: 2 * time.Second,
		PublicBaseURL:   "https://flowd.example.test",
	}
	return r
}

// replica is one flowd replica: an engine on its own connection to etcd.
type replica struct {
	*engine.Engine
	log *etcdlog.Log
}

// replica opens a replica; it is closed when the test ends.
func (r *rig) replica() *replica {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := etcdlog.Open(ctx, etcdlog.Options{Endpoints: r.etcd.Endpoints(), Prefix: r.prefix, Key: r.key, RequestTimeout: requestTimeout})
	require.NoError(r.t, err)
	cfg := r.cfg
	cfg.Log = l
	e, err := engine.Open(ctx, cfg)
	require.NoError(r.t, err)
	rep := &replica{Engine: e, log: l}
	r.t.Cleanup(rep.close)
	return rep
}

func (rep *replica) close() {
	_ = rep.Engine.Close()
	_ = rep.log.Close()
}

// waitLive waits until rep holds n live flows.
func (rep *replica) waitLive(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return rep.Stats().Live == n }, 20*time.Second, 5*time.Millisecond, "replica holds %d live flows", n)
}
