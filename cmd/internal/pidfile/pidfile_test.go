package pidfile

import (
	"io/fs"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteReadRemove(t *testing.T) {
	dir := t.TempDir()
	_, err := Read(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist)

	require.NoError(t, Write(dir, os.Getpid(), "/run/user/1000/flowd.sock"))
	r, err := Read(dir)
	require.NoError(t, err)
	assert.Equal(t, Running{PID: os.Getpid(), Socket: "/run/user/1000/flowd.sock", Alive: true}, r)
	fi, err := os.Stat(dir + "/" + Name)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())

	Remove(dir, os.Getpid()+1) // another flowd's: kept
	_, err = Read(dir)
	require.NoError(t, err)
	Remove(dir, os.Getpid())
	_, err = Read(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestReadSaysWhenTheProcessIsGone(t *testing.T) {
	dir := t.TempDir()
	// PIDs wrap far below this on Linux (pid_max is at most 2^22).
	require.NoError(t, Write(dir, 1<<30, "/tmp/s"))
	r, err := Read(dir)
	require.NoError(t, err)
	assert.False(t, r.Alive)
}
