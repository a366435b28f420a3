package etcdlog_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
)

// *Log is an engine.Log.
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
	// A short request timeout keeps the unavailable test (every call waits
	// it out) short; a one-member local cluster answers in milliseconds.
	open := func(t *testing.T, prefix string) *etcdlog.Log {
		l, err := etcdlog.Open(context.Background(), etcdlog.Options{Endpoints: c.Endpoints(), Prefix: prefix, Key: key, RequestTimeout: 2 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	logtest.Run(t,
		func(t *testing.T) engine.Log { return open(t, freshPrefix(t)) },
		logtest.WithReopen(func(t *testing.T, l engine.Log) engine.Log {
			el := l.(*etcdlog.Log)
			require.NoError(t, el.Close())
			return open(t, el.Prefix())
		}),
		logtest.WithFaults(logtest.Faults{
			// etcd raises the NOSPACE alarm when its backend passes its
			// quota, and then refuses writes; raising it by hand does the
			// same without writing the quota's worth of data.
			Full: func(t *testing.T, l engine.Log) func() {
				return noSpaceAlarm(t, l.(*etcdlog.Log).Client())
			},
			Unavailable: func(t *testing.T, l engine.Log) func() {
				c.Stop(0)
				return func() { c.Restart(0) }
			},
		}),
	)
}

// noSpaceAlarm raises etcd's NOSPACE alarm on every member and returns
// the function that disarms it.
func noSpaceAlarm(t *testing.T, cli *clientv3.Client) func() {
	t.Helper()
	ctx := context.Background()
	members, err := cli.MemberList(ctx)
	require.NoError(t, err)
	mc := pb.NewMaintenanceClient(cli.ActiveConnection())
	for _, m := range members.Members {
		_, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: m.ID, Alarm: pb.AlarmType_NOSPACE})
		require.NoError(t, err, "raise the NOSPACE alarm")
	}
	return func() {
		for _, m := range members.Members {
			_, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: m.ID, Alarm: pb.AlarmType_NOSPACE})
			require.NoError(t, err, "disarm the NOSPACE alarm")
		}
	}
}
