package crashtest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFilesCreatedPrivate starts a fresh flowd under a umask that would
// leave everything open (000) and checks that the state directory, the
// database, its key, the service token, the socket and the socket's
// directory are still private to flowd's user.
func TestFilesCreatedPrivate(t *testing.T) {
	r := newRig(t, nil, rigOptions{})
	r.socket = filepath.Join(r.dir, "run", "s") // a socket directory flowd must create
	old := syscall.Umask(0)                     // inherited by flowd
	r.spawn()
	syscall.Umask(old)
	require.NoError(t, r.ready(30e9))
	want := map[string]os.FileMode{
		r.stateDir:                                 0o700,
		filepath.Join(r.stateDir, "flowd.db"):      0o600,
		filepath.Join(r.stateDir, "flowd.db.key"):  0o600,
		filepath.Join(r.stateDir, "service_token"): 0o600,
		filepath.Join(r.stateDir, "flowd.pid"):     0o600,
		r.socket:                                   0o600,
		filepath.Dir(r.socket):                     0o700,
	}
	for p, mode := range want {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm(), "%s", p)
	}
	require.NoError(t, r.stop())
}
