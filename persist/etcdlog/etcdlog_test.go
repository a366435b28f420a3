package etcdlog_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
	"github.com/flowdhq/flowd/persist/seal"
	"github.com/flowdhq/flowd/states"
)

var bg = context.Background()

// single is one single-member cluster shared by this file's tests.
func single(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	return etcdtest.Start(t, 1, etcdtest.Options{NoFsync: true})
}

func TestOpenRefusesWithoutKey(t *testing.T) {
	_, err := etcdlog.Open(bg, etcdlog.Options{Endpoints: []string{"http://127.0.0.1:1"}})
	require.ErrorIs(t, err, etcdlog.ErrNoKey, "cluster mode must not start without the shared key")
	assert.Contains(t, err.Error(), etcdlog.KeyEnv, "the error says how to give the key")
}

func TestOpenRefusesAnotherReplicasKey(t *testing.T) {
	c := single(t)
	prefix := freshPrefix(t)
	openLog(t, c, prefix, newKey(t))
	_, err := etcdlog.Open(bg, etcdlog.Options{Endpoints: c.Endpoints(), Prefix: prefix, Key: newKey(t)})
	require.ErrorIs(t, err, etcdlog.ErrKeyMismatch, "a replica with another key must refuse to start")
}

func TestOpenRefusesAForeignPrefix(t *testing.T) {
	c := single(t)
	l := openLog(t, c, freshPrefix(t), newKey(t))
	_, err := l.Client().Put(bg, "other/meta/format", "something else 3")
	require.NoError(t, err)
	_, err = etcdlog.Open(bg, etcdlog.Options{Endpoints: c.Endpoints(), Prefix: "other/", Key: newKey(t)})
	require.ErrorIs(t, err, etcdlog.ErrNotLog)
}

func TestOpenUnreachableIsUnavailable(t *testing.T) {
	// Nothing listens on port 1.
	_, err := etcdlog.Open(bg, etcdlog.Options{
		Endpoints: []string{"http://127.0.0.1:1"}, Key: newKey(t),
		DialTimeout: 200 * time.Millisecond, RequestTimeout: 500 * time.Millisecond,
	})
	require.ErrorIs(t, err, etcdlog.ErrUnavailable)
	assert.Contains(t, err.Error(), "http://127.0.0.1:1", "the error names the endpoints")
}

func TestReplicasStartingAtOnceAgree(t *testing.T) {
	c := single(t)
	prefix, key := freshPrefix(t), newKey(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			l, err := etcdlog.Open(bg, etcdlog.Options{Endpoints: c.Endpoints(), Prefix: prefix, Key: key})
			if err == nil {
				l.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func TestSecretsAreSealedInEtcd(t *testing.T) {
	c := single(t)
	l := openLog(t, c, freshPrefix(t), newKey(t))
	plain := []byte("gho_16C7e42F292c6912E7710c838347Ae178B4a")
	require.NoError(t, l.Append(bg, nil, map[string][]byte{"token/github": plain}))
	resp, err := l.Client().Get(bg, l.Prefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	require.NotEmpty(t, resp.Kvs)
	for _, kv := range resp.Kvs {
		assert.False(t, bytes.Contains(kv.Value, plain), "key %s holds the plaintext", kv.Key)
	}
}

func TestTwoReplicasOneFlowOneWinner(t *testing.T) {
	c := single(t)
	prefix, key := freshPrefix(t), newKey(t)
	a, b := openLog(t, c, prefix, key), openLog(t, c, prefix, key)
	f := logtest.NewFlow(logtest.Base)
	require.NoError(t, a.Append(bg, []states.Record{f.Created(), f.URLIssued()}, nil))
	next := f.ExchangeStarted()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, l := range []*etcdlog.Log{a, b} {
		wg.Go(func() {
			rec := next
			rec.Data.Message = fmt.Sprint("replica ", i)
			errs[i] = l.Append(bg, []states.Record{rec}, nil)
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else {
			assert.ErrorIs(t, err, engine.ErrConflict)
		}
	}
	assert.Equal(t, 1, wins, "exactly one replica advances the flow")
	h, err := b.History(bg, f.ID)
	require.NoError(t, err)
	assert.Len(t, h, 3)
}

func TestSeqFollowsCommitOrderAcrossReplicas(t *testing.T) {
	c := single(t)
	prefix, key := freshPrefix(t), newKey(t)
	a, b := openLog(t, c, prefix, key), openLog(t, c, prefix, key)
	var last uint64
	for i := range 6 {
		l := a
		if i%2 == 1 {
			l = b
		}
		f := logtest.NewFlow(logtest.Base)
		recs := []states.Record{f.Created(), f.URLIssued()}
		require.NoError(t, l.Append(bg, recs, nil))
		assert.Greater(t, recs[0].Seq, last, "a later append on any replica gets a greater Seq")
		assert.Greater(t, recs[1].Seq, recs[0].Seq)
		last = recs[1].Seq
	}
}

func TestFlowIDsWithSlashAreRefused(t *testing.T) {
	c := single(t)
	l := openLog(t, c, freshPrefix(t), newKey(t))
	f := logtest.NewFlow(logtest.Base)
	f.ID = "a/b"
	err := l.Append(bg, []states.Record{f.Created()}, nil)
	require.Error(t, err)
	h, err := l.History(bg, "a/b")
	require.NoError(t, err)
	assert.Empty(t, h)
}

func TestKeyFrom(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "seal.key")
		want, err := seal.CreateKey(path)
		require.NoError(t, err)
		got, err := etcdlog.KeyFrom(path)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
	t.Run("file too open", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "seal.key")
		_, err := seal.CreateKey(path)
		require.NoError(t, err)
		require.NoError(t, os.Chmod(path, 0o644))
		_, err = etcdlog.KeyFrom(path)
		require.ErrorIs(t, err, seal.ErrKeyMode)
	})
	t.Run("env", func(t *testing.T) {
		want := newKey(t)
		t.Setenv(etcdlog.KeyEnv, base64.StdEncoding.EncodeToString(want)+"\n")
		got, err := etcdlog.KeyFrom("")
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
	t.Run("env wrong size", func(t *testing.T) {
		t.Setenv(etcdlog.KeyEnv, base64.StdEncoding.EncodeToString([]byte("short")))
		_, err := etcdlog.KeyFrom("")
		require.ErrorIs(t, err, seal.ErrKeySize)
		assert.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString([]byte("short")), "the error never shows the key")
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv(etcdlog.KeyEnv, "")
		_, err := etcdlog.KeyFrom("")
		require.ErrorIs(t, err, etcdlog.ErrNoKey)
	})
}

func TestTLSFiles(t *testing.T) {
	_, err := etcdlog.TLSFiles("client.pem", "", "")
	require.Error(t, err, "a certificate without its key is refused")
	cfg, err := etcdlog.TLSFiles("", "", "")
	require.NoError(t, err, "server-only TLS with the system roots")
	assert.Nil(t, cfg.RootCAs)
	_, err = etcdlog.TLSFiles("", "", filepath.Join(t.TempDir(), "missing-ca.pem"))
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "missing-ca.pem"), "the error names the file: %v", err)
}
