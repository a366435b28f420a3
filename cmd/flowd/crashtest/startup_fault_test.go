package crashtest

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// preparedRig is a rig whose state directory flowd has already used: a
// database holding a live flow and sealed secrets, its key and the
// service token. flowd is stopped.
func preparedRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, nil, rigOptions{})
	r.start()
	rp, err := r.call("POST", "/v1/flows", wire.StartRequest{Provider: "fake"})
	require.NoError(t, err)
	require.Equal(t, 201, rp.status, string(rp.body))
	require.NoError(t, r.stop())
	return r
}

// panicked reports whether flowd's output shows a Go panic or fatal
// error instead of a message for people.
func panicked(out string) bool {
	return strings.Contains(out, "goroutine ") || strings.Contains(out, "panic:") || strings.Contains(out, "fatal error:")
}

// TestStartupRefusals: for each fault flowd exits at once with status 1,
// says which file or port is at fault and what to do, leaves no socket
// behind, and never shows a Go panic.
func TestStartupRefusals(t *testing.T) {
	db := func(r *rig) string { return filepath.Join(r.stateDir, "flowd.db") }
	key := func(r *rig) string { return db(r) + ".key" }
	cases := []struct {
		name string
		// breakIt damages the state and returns what the message must
		// name and say; release undoes anything held open.
		breakIt func(t *testing.T, r *rig) (names []string, advice []string, release func())
	}{
		{"loopback port taken", func(t *testing.T, r *rig) ([]string, []string, func()) {
			l, err := net.Listen("tcp", r.listen)
			require.NoError(t, err)
			_, port, _ := net.SplitHostPort(r.listen)
			return []string{"port " + port}, []string{"already in use", "-listen"}, func() { l.Close() }
		}},
		{"database held by another process", func(t *testing.T, r *rig) ([]string, []string, func()) {
			// This test process is the other process: it holds bbolt's flock.
			h, err := bolt.Open(db(r), 0o600, &bolt.Options{Timeout: time.Second})
			require.NoError(t, err)
			return []string{db(r)}, []string{"locked", "stop it"}, func() { h.Close() }
		}},
		{"database is garbage", func(t *testing.T, r *rig) ([]string, []string, func()) {
			junk := make([]byte, 64<<10)
			_, _ = rand.Read(junk)
			require.NoError(t, os.WriteFile(db(r), junk, 0o600))
			return []string{db(r)}, []string{"not a flowd event log"}, nil
		}},
		{"database is zeros", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.WriteFile(db(r), make([]byte, 32<<10), 0o600))
			return []string{db(r)}, []string{"not a flowd event log"}, nil
		}},
		{"database truncated", func(t *testing.T, r *rig) ([]string, []string, func()) {
			fi, err := os.Stat(db(r))
			require.NoError(t, err)
			require.NoError(t, os.Truncate(db(r), fi.Size()/3))
			return []string{db(r)}, nil, nil
		}},
		{"key file missing", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Remove(key(r)))
			return []string{key(r)}, []string{"restore the key file"}, nil
		}},
		{"key file wrong size", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.WriteFile(key(r), []byte("short"), 0o600))
			return []string{key(r)}, []string{"want 32", "restore"}, nil
		}},
		{"key file group-readable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Chmod(key(r), 0o640))
			return []string{key(r)}, []string{"chmod 600 " + key(r)}, nil
		}},
		{"key file world-readable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Chmod(key(r), 0o604))
			return []string{key(r)}, []string{"chmod 600 " + key(r)}, nil
		}},
		{"database group-readable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Chmod(db(r), 0o640))
			return []string{db(r)}, []string{"chmod 600 " + db(r)}, nil
		}},
		{"service token world-readable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			p := filepath.Join(r.stateDir, "service_token")
			require.NoError(t, os.Chmod(p, 0o644))
			return []string{p}, []string{"chmod 600 " + p}, nil
		}},
		{"state directory group-readable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Chmod(r.stateDir, 0o750))
			return []string{r.stateDir}, []string{"chmod 700 " + r.stateDir}, nil
		}},
		{"state directory world-searchable", func(t *testing.T, r *rig) ([]string, []string, func()) {
			require.NoError(t, os.Chmod(r.stateDir, 0o701))
			return []string{r.stateDir}, []string{"chmod 700 " + r.stateDir}, nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := preparedRig(t)
			names, advice, release := c.breakIt(t, r)
			if release != nil {
				defer release()
			}
			begin := time.Now()
			code, out := r.run(30 * time.Second)
			took := time.Since(begin)
			t.Logf("flowd said (after %v): %s", took.Round(time.Millisecond), strings.TrimSpace(out))
			assert.Equal(t, 1, code, "flowd refuses to start")
			assert.False(t, panicked(out), "a message for people, not a panic")
			for _, n := range names {
				assert.Contains(t, out, n, "the message names what is at fault")
			}
			for _, a := range advice {
				assert.Contains(t, out, a, "the message says what to do")
			}
			_, err := os.Stat(r.socket)
			assert.True(t, os.IsNotExist(err), "a refused start leaves no socket behind")
			assert.Less(t, took, 15*time.Second, "flowd gives up, it does not hang")
		})
	}
}

// TestCorruptDatabasePages damages bytes inside the database's data pages
// (not its meta pages, which bbolt checksums): flowd must either start,
// the damage having missed what it reads, or refuse with a message naming
// the file. It must never crash with a Go panic or a fault.
func TestCorruptDatabasePages(t *testing.T) {
	r := preparedRig(t)
	// More flows, so there are pages to damage.
	r.start()
	for range 40 {
		rp, err := r.call("POST", "/v1/flows", wire.StartRequest{Provider: "fake", Account: randHex(8)})
		require.NoError(t, err)
		require.Equal(t, 201, rp.status)
	}
	require.NoError(t, r.stop())
	db := filepath.Join(r.stateDir, "flowd.db")
	pristine, err := os.ReadFile(db)
	require.NoError(t, err)
	const page = 4096
	require.Greater(t, len(pristine), 4*page)

	started, refused := 0, 0
	for i := range 12 {
		damaged := append([]byte(nil), pristine...)
		// Pages 0 and 1 are bbolt's meta pages; damage the rest.
		for range 1 + i%4 {
			off := 2*page + mrand.N(len(damaged)-2*page)
			damaged[off] ^= byte(1 + mrand.N(255))
		}
		require.NoError(t, os.WriteFile(db, damaged, 0o600))
		r.spawn()
		err := r.ready(15 * time.Second)
		out := r.out.String()
		if err == nil {
			started++
			// It runs: reads of the whole log must answer, not crash.
			rp, err := r.call("GET", "/v1/flows", nil)
			require.NoError(t, err, "flowd answers a full listing on a damaged log")
			assert.Contains(t, []int{200, 500}, rp.status, "a listing answers, or reports the damage: %s", rp.body)
			_ = r.stop()
		} else {
			refused++
			<-r.proc.exited
			r.proc = nil
		}
		assert.False(t, panicked(out), "damage %d: flowd crashed:\n%s", i, tail(out, 3000))
		if err != nil {
			assert.Contains(t, out, db, "damage %d: the refusal names the database", i)
		}
		r.out.Reset()
	}
	t.Logf("damaged database: %d runs started, %d refused with a message, none crashed", started, refused)
}
