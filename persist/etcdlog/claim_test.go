package etcdlog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
)

// *Log grants claims.
var _ engine.Claimer = (*etcdlog.Log)(nil)

// openClaimLog opens a log with opts on c and closes it when the test ends.
func openClaimLog(t *testing.T, c *etcdtest.Cluster, opts etcdlog.Options) *etcdlog.Log {
	t.Helper()
	if opts.Client == nil {
		opts.Endpoints = c.Endpoints()
	}
	l, err := etcdlog.Open(bg, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// claimed asserts what l.Claim(key) reports.
func claimed(t *testing.T, l *etcdlog.Log, key string, want bool, msg string) {
	t.Helper()
	got, err := l.Claim(bg, key)
	require.NoError(t, err, msg)
	require.Equal(t, want, got, msg)
}

// TestClaims runs the claim tests on one cluster, each on its own prefix.
func TestClaims(t *testing.T) {
	c := single(t)
	key := newKey(t)
	// two opens two writers on one fresh prefix.
	two := func(t *testing.T) (a, b *etcdlog.Log) {
		prefix := freshPrefix(t)
		return openClaimLog(t, c, etcdlog.Options{Prefix: prefix, Key: key}),
			openClaimLog(t, c, etcdlog.Options{Prefix: prefix, Key: key})
	}

	t.Run("OneHolderPerKey", func(t *testing.T) {
		a, b := two(t)
		claimed(t, a, "device/f1", true, "a free claim is taken")
		claimed(t, b, "device/f1", false, "another writer's claim is not taken")
		claimed(t, a, "device/f1", true, "a held claim stays held")
		claimed(t, b, "device/f2", true, "claims are per key")
		claimed(t, a, "device/f2", false, "claims are per key")
	})

	t.Run("ReleaseFreesOnlyOwnClaim", func(t *testing.T) {
		a, b := two(t)
		claimed(t, a, "device/f1", true, "a free claim is taken")
		require.NoError(t, a.Release(bg, "device/f1"))
		claimed(t, b, "device/f1", true, "a released claim is free at once")
		require.NoError(t, a.Release(bg, "device/f1"), "releasing another writer's claim is no error")
		claimed(t, b, "device/f1", true, "releasing another writer's claim leaves it held")
		claimed(t, a, "device/f1", false, "releasing another writer's claim leaves it held")
		require.NoError(t, a.Release(bg, "device/never"), "releasing a claim nobody holds is no error")
	})

	t.Run("CloseReleasesAtOnce", func(t *testing.T) {
		a, b := two(t)
		claimed(t, a, "device/f1", true, "a free claim is taken")
		claimed(t, a, "device/f2", true, "a free claim is taken")
		claimed(t, b, "device/f1", false, "another writer's claim is not taken")
		require.NoError(t, a.Close())
		// The TTL is DefaultClaimTTL: only the revoked lease frees them now.
		claimed(t, b, "device/f1", true, "a closed writer's claims are free at once")
		claimed(t, b, "device/f2", true, "a closed writer's claims are free at once")
		_, err := a.Claim(bg, "device/f3")
		require.ErrorIs(t, err, engine.ErrLogUnavailable, "a closed log claims nothing")
	})

	t.Run("LapsesAfterDeath", func(t *testing.T) {
		prefix := freshPrefix(t)
		// A has a client of its own, so that closing it stops A's
		// keepalives without revoking A's lease: A's process died.
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		require.NoError(t, err)
		defer cli.Close()
		const ttl = 2 * time.Second
		a := openClaimLog(t, c, etcdlog.Options{Client: cli, Prefix: prefix, Key: key, ClaimTTL: ttl})
		b := openClaimLog(t, c, etcdlog.Options{Prefix: prefix, Key: key})
		claimed(t, a, "device/f1", true, "a free claim is taken")
		claimed(t, b, "device/f1", false, "another writer's claim is not taken")
		require.NoError(t, cli.Close())
		require.Eventually(t, func() bool {
			ok, err := b.Claim(bg, "device/f1")
			return err == nil && ok
		}, 3*ttl+2*time.Second, 100*time.Millisecond, "a dead writer's claim lapses with its lease")
	})

	t.Run("SurvivesANewSession", func(t *testing.T) {
		a, b := two(t)
		claimed(t, a, "device/f1", true, "a free claim is taken")
		// A's session ended while etcd kept its lease; the next claim
		// grants a new lease and must move A's claim under it.
		old := etcdlog.OrphanClaimSession(a)
		require.NotEqual(t, clientv3.NoLease, old)
		claimed(t, a, "device/f1", true, "a held claim stays held under a new session")
		_, err := a.Client().Revoke(bg, old)
		require.NoError(t, err)
		claimed(t, b, "device/f1", false, "the claim lives under the new lease, not the old one")
		claimed(t, a, "device/f1", true, "a held claim stays held")
	})

	t.Run("RefusesBadKeys", func(t *testing.T) {
		a, _ := two(t)
		for _, k := range []string{"", "device/a\x00b", strings.Repeat("k", 4096)} {
			_, err := a.Claim(bg, k)
			assert.Error(t, err, "claim %.20q", k)
			assert.Error(t, a.Release(bg, k), "release %.20q", k)
		}
		claimed(t, a, "device/"+strings.Repeat("k", 1024), true, "a key naming any flow id is fine")
	})
}

func TestClaimUnavailable(t *testing.T) {
	c := single(t)
	prefix, key := freshPrefix(t), newKey(t)
	opts := etcdlog.Options{Prefix: prefix, Key: key, RequestTimeout: time.Second}
	a := openClaimLog(t, c, opts)
	b := openClaimLog(t, c, opts)
	claimed(t, a, "device/f1", true, "a free claim is taken")
	c.Stop(0)
	_, err := a.Claim(bg, "device/f1")
	require.ErrorIs(t, err, engine.ErrLogUnavailable, "claim under a lease already granted")
	_, err = b.Claim(bg, "device/f1")

	require.ErrorIs(t, err, engine.ErrLogUnavailable, "first claim, granting the lease")
	require.ErrorIs(t, a.Release(bg, "device/f1"), engine.ErrLogUnavailable)
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err, "closing with etcd down is no error: the claims lapse with the lease")
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs with etcd down")
	}
}
