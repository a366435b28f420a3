package etcdlog_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"flowd.local/flowd/engine"
	"flowd.local/flowd/engine/logtest"
	"flowd.local/flowd/persist/etcdlog"
	"flowd.local/flowd/persist/etcdlog/etcdtest"
)

// *Log is an engine.Log; asserted here because etcdlog must not import engine.
var _ engine.Log = (*etcdlog.Log)(nil)

var prefixes atomic.Int64

// newKey draws a sealing key.
func newKey(t testing.TB) []byte {
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	return key
}

// openLog opens a log on c under prefix and closes it when the test ends.
func openLog(t testing.TB, c *etcdtest.Cluster, prefix string, key []byte) *etcdlog.Log {
	t.Helper()
	l, err := etcdlog.Open(context.Background(), etcdlog.Options{Endpoints: c.Endpoints(), Prefix: prefix, Key: key})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// freshPrefix is a prefix no other test in this process uses, so tests
// share one cluster yet each starts on an empty log.
func freshPrefix(t testing.TB) string {
	return fmt.Sprintf("test/%d/", prefixes.Add(1))
}

func TestContract(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	key := newKey(t)
	logtest.Run(t,
		func(t *testing.T) engine.Log { return openLog(t, c, freshPrefix(t), key) },
		logtest.WithReopen(func(t *testing.T, l engine.Log) engine.Log {
			el := l.(*etcdlog.Log)
			require.NoError(t, el.Close())
			return openLog(t, c, el.Prefix(), key)
		}),
	)
}
