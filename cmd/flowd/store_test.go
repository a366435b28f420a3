package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/persist/etcdlog"
)

func TestStoreFlags(t *testing.T) {
	var out bytes.Buffer
	assert.Equal(t, 2, run([]string{"-store", "postgres"}, &out))
	assert.Contains(t, out.String(), `store "postgres" (-store): use bbolt`)
	out.Reset()
	assert.Equal(t, 2, run([]string{"-store", "etcd"}, &out))
	assert.Contains(t, out.String(), "-etcd-endpoints")
	out.Reset()
	assert.Equal(t, 0, run([]string{"-h"}, &out))
	for _, f := range []string{"-store", "-etcd-endpoints", "-etcd-ca", "-seal-key-file"} {
		assert.Contains(t, out.String(), f)
	}
}

// Cluster mode refuses to start without the key the replicas share, before
// it connects to anything.
func TestEtcdStoreRefusesToStartWithoutKey(t *testing.T) {
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv(etcdlog.KeyEnv, "")
	var out bytes.Buffer
	code := run([]string{"-store", "etcd", "-etcd-endpoints", "http://127.0.0.1:1",
		"-state-dir", filepath.Join(dir, "state"), "-socket", filepath.Join(dir, "s"), "-listen", "127.0.0.1:0"}, &out)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), "no sealing key")
	assert.Contains(t, out.String(), etcdlog.KeyEnv, "the error says how to give the key")
}
