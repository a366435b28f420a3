package persist_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/seal"
	"github.com/flowdhq/flowd/states"
)

var bg = context.Background()

func dbPath(t *testing.T) string { return filepath.Join(t.TempDir(), "flowd.db") }

func appendRecs(t *testing.T, db *persist.DB, secrets map[string][]byte, recs ...states.Record) []states.Record {
	t.Helper()
	require.NoError(t, db.Append(bg, recs, secrets))
	return recs
}

// rawUpdate edits the database file with bbolt directly, as damage would.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	raw, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, raw.Update(fn))
	require.NoError(t, raw.Close())
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func TestOpenCreatesFilesOwnerOnly(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	require.NoError(t, db.Close())
	for _, p := range []string{path, path + ".key"} {
		info, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "%s must be readable by its owner only", p)
	}
}

func TestSecondOpenFailsFastNamingThePath(t *testing.T) {
	path := dbPath(t)
	openDB(t, path, persist.Options{})

	// bbolt's flock belongs to the open file description, so a second
	// open in the same process is refused just as another process's is.
	for _, opts := range []persist.Options{{}, {ReadOnly: true}} {
		start := time.Now()
		db, err := persist.Open(path, opts)
		elapsed := time.Since(start)
		if db != nil {
			db.Close()
		}
		require.Error(t, err, "a second open (read-only=%v) must be refused while the database is held", opts.ReadOnly)
		assert.ErrorIs(t, err, persist.ErrLocked)
		assert.Contains(t, err.Error(), path, "the error names the database")
		assert.Contains(t, err.Error(), "running flowd", "the error says who probably holds it")
		// The default timeout is one second; bound loosely, the machine is shared.
		assert.Less(t, elapsed, 10*time.Second, "the open must give up, not block forever")
		assert.GreaterOrEqual(t, elapsed, 500*time.Millisecond, "the open waits about Options.Timeout for the lock")
	}

	start := time.Now()
	_, err := persist.Open(path, persist.Options{Timeout: 50 * time.Millisecond})
	assert.ErrorIs(t, err, persist.ErrLocked)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestReopenAfterClose(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	f := logtest.NewFlow(logtest.Base)
	recs := appendRecs(t, db, map[string][]byte{"verifier/" + f.ID: []byte("v")}, f.Created(), f.URLIssued())
	require.NoError(t, db.Close())
	assert.NoError(t, db.Close(), "closing twice is harmless")

	db = openDB(t, path, persist.Options{})
	h, err := db.History(bg, f.ID)
	require.NoError(t, err)
	assert.Equal(t, recs, h)
	v, ok, err := db.Secret(bg, "verifier/"+f.ID)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, []byte("v"), v)
}

func TestReadOnly(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	f := logtest.NewFlow(logtest.Base)
	recs := appendRecs(t, db, map[string][]byte{"token/github": []byte("gho_x")}, f.Created())
	require.NoError(t, db.Close())

	ro := openDB(t, path, persist.Options{ReadOnly: true})
	h, err := ro.History(bg, f.ID)
	require.NoError(t, err)
	assert.Equal(t, recs, h)
	v, ok, err := ro.Secret(bg, "token/github")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, []byte("gho_x"), v)
	err = ro.Append(bg, []states.Record{f.URLIssued()}, nil)
	assert.ErrorIs(t, err, persist.ErrReadOnly)
	_, err = ro.Prune(bg, time.Now())
	assert.ErrorIs(t, err, persist.ErrReadOnly)

	// Two read-only opens share the lock.
	ro2 := openDB(t, path, persist.Options{ReadOnly: true})
	require.NoError(t, ro2.Close())
	require.NoError(t, ro.Close())

	// Without the key file, records still read; secrets say why they do not.
	require.NoError(t, os.Rename(path+".key", path+".key.away"))
	ro = openDB(t, path, persist.Options{ReadOnly: true})
	h, err = ro.History(bg, f.ID)
	require.NoError(t, err)
	assert.Equal(t, recs, h)
	_, _, err = ro.Secret(bg, "token/github")
	assert.ErrorIs(t, err, seal.ErrKeyMissing)
	assert.Contains(t, err.Error(), path+".key")
}

func TestReadOnlyMissingFile(t *testing.T) {
	path := dbPath(t)
	_, err := persist.Open(path, persist.Options{ReadOnly: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "no such file")
	_, statErr := os.Stat(path)
	assert.True(t, os.IsNotExist(statErr), "a read-only open must not create the database")
}

func TestNotAnEventLog(t *testing.T) {
	dir := t.TempDir()
	noise := make([]byte, 64<<10)
	_, _ = rand.Read(noise)
	cases := map[string][]byte{
		"text":  []byte("[server]\nlisten = \"127.0.0.1:8085\"\n"),
		"tiny":  []byte("x"),
		"noise": noise,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(path, content, 0o600))
			db, err := persist.Open(path, persist.Options{})
			if db != nil {
				db.Close()
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, persist.ErrNotLog)
			assert.Contains(t, err.Error(), path)
			after, readErr := os.ReadFile(path)
			require.NoError(t, readErr)
			assert.Equal(t, content, after, "a refused file is left as it was")
		})
	}

	t.Run("other bbolt database", func(t *testing.T) {
		path := filepath.Join(dir, "other.db")
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("users"))
			return err
		})
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, persist.ErrNotLog)
		assert.Contains(t, err.Error(), "users")
	})

	t.Run("empty file read-only", func(t *testing.T) {
		path := filepath.Join(dir, "empty")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		_, err := persist.Open(path, persist.Options{ReadOnly: true})
		assert.ErrorIs(t, err, persist.ErrNotLog)
		assert.Contains(t, err.Error(), "empty")
	})

	t.Run("directory", func(t *testing.T) {
		_, err := persist.Open(dir, persist.Options{})
		assert.ErrorIs(t, err, persist.ErrNotLog)
	})

	t.Run("newer format", func(t *testing.T) {
		path := filepath.Join(dir, "newer.db")
		db := openDB(t, path, persist.Options{})
		require.NoError(t, db.Close())
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("flowd-events 9"))
		})
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, persist.ErrNewerFormat)
		assert.Contains(t, err.Error(), "upgrade flowd")
	})

	t.Run("older format", func(t *testing.T) {
		// Format 1 keyed its indexes by flow id; this flowd does not read it.
		path := filepath.Join(dir, "older.db")
		db := openDB(t, path, persist.Options{})
		require.NoError(t, db.Close())
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("flowd-events 1"))
		})
		before, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, opts := range []persist.Options{{}, {ReadOnly: true}} {
			_, err := persist.Open(path, opts)
			assert.ErrorIs(t, err, persist.ErrOlderFormat)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), "format 1")
			assert.Contains(t, err.Error(), "flowctl log export", "the error says how to keep the history")
			assert.Contains(t, err.Error(), "move the file", "the error says how to start anew")
		}
		after, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, before, after, "a refused file is left as it was")
		err = persist.Compact(path, filepath.Join(dir, "older-compact.db"))
		assert.ErrorIs(t, err, persist.ErrOlderFormat, "Compact refuses it too")
	})
}

// corruptDB returns a closed log holding a live flow, a finished flow
// and a last record, and their records.
func corruptDB(t *testing.T) (path string, liveRecs, endedRecs, last []states.Record) {
	path = dbPath(t)
	db := openDB(t, path, persist.Options{})
	lf, ef, xf := logtest.NewFlow(logtest.Base), logtest.NewFlow(logtest.Base), logtest.NewFlow(logtest.Base)
	liveRecs = appendRecs(t, db, nil, lf.Created(), lf.URLIssued())
	endedRecs = appendRecs(t, db, nil, ef.Created(), ef.URLIssued(), ef.Failed(states.Canceled))
	last = appendRecs(t, db, nil, xf.Created(), xf.Expired())
	require.NoError(t, db.Close())
	return path, liveRecs, endedRecs, last
}

func assertNamesRecord(t *testing.T, err error, rec states.Record) {
	t.Helper()
	require.Error(t, err)
	var re *states.RecordError
	require.ErrorAs(t, err, &re, "the error names the record")
	assert.Equal(t, rec.Seq, re.Seq)
	assert.Equal(t, rec.Flow, re.Flow)
	assert.Contains(t, err.Error(), "seq="+itoa(rec.Seq))
	assert.Contains(t, err.Error(), states.ShortID(rec.Flow))
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestCorruptRecordFailsOpen(t *testing.T) {
	garbage := map[string][]byte{
		"garbage":       []byte("\x00\xffnot json at all"),
		"truncated":     []byte(`{"v":1,"seq":2,"flow":"`),
		"future schema": []byte(`{"v":99,"seq":2}`),
	}
	for name, bad := range garbage {
		t.Run("live flow "+name, func(t *testing.T) {
			path, liveRecs, _, _ := corruptDB(t)
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("events")).Put(seqKey(liveRecs[1].Seq), bad)
			})
			db, err := persist.Open(path, persist.Options{})
			if db != nil {
				db.Close()
			}
			require.Error(t, err, "Open must refuse a log whose live flow cannot be read")
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), "seq="+itoa(liveRecs[1].Seq))
			var re *states.RecordError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, liveRecs[1].Seq, re.Seq)
			assert.Equal(t, liveRecs[1].Flow, re.Flow, "the error names the flow, from the index")
		})
	}

	t.Run("last record", func(t *testing.T) {
		path, _, _, last := corruptDB(t)
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("events")).Put(seqKey(last[1].Seq), []byte("{{{"))
		})
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, states.ErrUndecodable)
		assertNamesRecord(t, err, states.Record{Seq: last[1].Seq, Flow: "?"})
	})

	t.Run("record under the wrong seq", func(t *testing.T) {
		path, liveRecs, _, _ := corruptDB(t)
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			other := tx.Bucket([]byte("events")).Get(seqKey(liveRecs[0].Seq))
			return tx.Bucket([]byte("events")).Put(seqKey(liveRecs[1].Seq), append([]byte{}, other...))
		})
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, persist.ErrCorrupt)
	})
}

func TestCorruptFinishedFlowFailsReads(t *testing.T) {
	path, liveRecs, endedRecs, last := corruptDB(t)
	bad := endedRecs[1]
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("events")).Put(seqKey(bad.Seq), []byte("garbage"))
	})
	// Recovery does not read finished flows: the log opens ...
	db := openDB(t, path, persist.Options{})
	// ... but every read that meets the record says which it is.
	_, err := db.History(bg, bad.Flow)
	assert.ErrorIs(t, err, states.ErrUndecodable)
	assertNamesRecord(t, err, bad)

	var seen []uint64
	err = db.Scan(bg, 0, func(r states.Record) error { seen = append(seen, r.Seq); return nil })
	assert.ErrorIs(t, err, states.ErrUndecodable)
	assert.Contains(t, err.Error(), "seq="+itoa(bad.Seq))
	assert.Equal(t, []uint64{liveRecs[0].Seq, liveRecs[1].Seq, endedRecs[0].Seq}, seen, "Scan delivers the records before the damaged one")

	// The rest of the log still works.
	h, err := db.History(bg, last[0].Flow)
	require.NoError(t, err)
	assert.Equal(t, last, h)
	n := 0
	require.NoError(t, db.Live(bg, func([]states.Record) error { n++; return nil }))
	assert.Equal(t, 1, n)
}

func TestKeyFileChecks(t *testing.T) {
	withSecret := func(t *testing.T) string {
		path := dbPath(t)
		db := openDB(t, path, persist.Options{})
		appendRecs(t, db, map[string][]byte{"token/github": []byte("gho_x")})
		require.NoError(t, db.Close())
		return path
	}

	t.Run("missing while secrets exist", func(t *testing.T) {
		path := withSecret(t)
		require.NoError(t, os.Remove(path+".key"))
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, seal.ErrKeyMissing)
		assert.Contains(t, err.Error(), path+".key", "the error names the key file")
		assert.Contains(t, err.Error(), "restore", "the error says what to do")
		_, statErr := os.Stat(path + ".key")
		assert.True(t, os.IsNotExist(statErr), "Open must not create a new key over sealed secrets")
	})

	t.Run("missing without secrets", func(t *testing.T) {
		path := dbPath(t)
		db := openDB(t, path, persist.Options{})
		f := logtest.NewFlow(logtest.Base)
		appendRecs(t, db, nil, f.Created())
		require.NoError(t, db.Close())
		require.NoError(t, os.Remove(path+".key"))
		db = openDB(t, path, persist.Options{})
		require.NoError(t, db.Append(bg, nil, map[string][]byte{"s": []byte("v")}), "a new key is made when no secret is lost by it")
		require.NoError(t, db.Close())
		db = openDB(t, path, persist.Options{})
		v, ok, err := db.Secret(bg, "s")
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, []byte("v"), v)
	})

	t.Run("wrong size", func(t *testing.T) {
		path := withSecret(t)
		require.NoError(t, os.WriteFile(path+".key", []byte("short"), 0o600))
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, seal.ErrKeySize)
		assert.Contains(t, err.Error(), path+".key")
	})

	t.Run("readable by others", func(t *testing.T) {
		path := withSecret(t)
		require.NoError(t, os.Chmod(path+".key", 0o644))
		_, err := persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, seal.ErrKeyMode)
		assert.Contains(t, err.Error(), "chmod 600 "+path+".key")
	})

	t.Run("another key", func(t *testing.T) {
		path := withSecret(t)
		require.NoError(t, os.Remove(path+".key"))
		_, err := seal.CreateKey(path + ".key")
		require.NoError(t, err)
		_, err = persist.Open(path, persist.Options{})
		assert.ErrorIs(t, err, persist.ErrKeyMismatch)
		assert.Contains(t, err.Error(), path+".key")
	})

	t.Run("custom key path", func(t *testing.T) {
		path := dbPath(t)
		key := filepath.Join(t.TempDir(), "elsewhere.key")
		db := openDB(t, path, persist.Options{KeyFile: key})
		appendRecs(t, db, map[string][]byte{"s": []byte("v")})
		require.NoError(t, db.Close())
		_, err := os.Stat(key)
		assert.NoError(t, err)
		_, err = os.Stat(path + ".key")
		assert.True(t, os.IsNotExist(err))
	})
}

func TestSecretsNeverInTheFile(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	plain := [][]byte{
		[]byte("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),    // PKCE verifier
		[]byte("gho_16C7e42F292c6912E7710c838347Ae178B4a"),       // token
		[]byte("1//0gLongLivedRefreshTokenValue-abcdefghijklmn"), // refresh token
		[]byte("overwritten-secret-value-0123456789"),
		[]byte("deleted-secret-value-9876543210"),
	}
	f := logtest.NewFlow(logtest.Base)
	appendRecs(t, db, map[string][]byte{"verifier/" + f.ID: plain[0], "over": plain[3], "gone": plain[4]}, f.Created(), f.URLIssued())
	appendRecs(t, db, map[string][]byte{"token/github": plain[1], "refresh/github": plain[2], "over": []byte("second"), "gone": nil})
	require.NoError(t, db.Close())

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Contains(raw, []byte(f.ID)), "the scan sees the file's records (flow id found)")
	for _, p := range plain {
		assert.False(t, bytes.Contains(raw, p), "plaintext %q found in the database file", p)
	}
}

func TestPruneEmptiesIndexes(t *testing.T) {
	path := dbPath(t)
	db := openDB(t, path, persist.Options{})
	for range 600 { // more than one prune transaction's worth
		f := logtest.NewFlow(logtest.Base)
		appendRecs(t, db, nil, f.Created(), f.URLIssued(), f.Failed(states.Canceled), f.Ignored())
	}
	keep := logtest.NewFlow(logtest.Base)
	appendRecs(t, db, nil, keep.Created())
	n, err := db.Prune(bg, logtest.Base.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 600, n)
	require.NoError(t, db.Close())

	counts := map[string]int{}
	raw, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, raw.View(func(tx *bolt.Tx) error {
		for _, b := range []string{"events", "ids", "heads", "live", "ended"} {
			counts[b] = tx.Bucket([]byte(b)).Stats().KeyN
		}
		return nil
	}))
	require.NoError(t, raw.Close())
	assert.Equal(t, map[string]int{"events": 1, "ids": 1, "heads": 1, "live": 1, "ended": 0}, counts, "Prune leaves nothing of the pruned flows in any index")
}

func TestPruneStopsOnCancelledContext(t *testing.T) {
	db := newDB(t)
	f := logtest.NewFlow(logtest.Base)
	appendRecs(t, db, nil, f.Created(), f.Expired())
	ctx, cancel := context.WithCancel(bg)
	cancel()
	n, err := db.Prune(ctx, logtest.Base.Add(time.Hour))
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, n)
	h, err := db.History(bg, f.ID)
	require.NoError(t, err)
	assert.Len(t, h, 2)
}

func TestLiveFnMayAppend(t *testing.T) {
	// Recovery expires overdue flows from inside Live: that must not
	// deadlock on Live's own read.
	db := newDB(t)
	for range 20 {
		f := logtest.NewFlow(logtest.Base)
		appendRecs(t, db, nil, f.Created())
	}
	err := db.Live(bg, func(h []states.Record) error {
		last := h[len(h)-1]
		rec := states.Record{Version: states.SchemaVersion, Flow: last.Flow, FlowSeq: last.FlowSeq + 1,
			Event: states.DeadlinePassed, From: states.Pending, To: states.Expired, Time: logtest.Base.Add(time.Hour),
			Data: states.Data{Reason: states.ExpiredWhileDown}}
		return db.Append(bg, []states.Record{rec}, nil)
	})
	require.NoError(t, err)
	n := 0
	require.NoError(t, db.Live(bg, func([]states.Record) error { n++; return nil }))
	assert.Zero(t, n)
}

func TestCompact(t *testing.T) {
	src := dbPath(t)
	db := openDB(t, src, persist.Options{})
	for range 2000 {
		f := logtest.NewFlow(logtest.Base)
		appendRecs(t, db, nil, f.Complete()...)
	}
	live := logtest.NewFlow(logtest.Base.Add(48 * time.Hour))
	appendRecs(t, db, map[string][]byte{"token/github": []byte("gho_x")}, live.Created())
	n, err := db.Prune(bg, logtest.Base.Add(24*time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2000, n)

	dst := filepath.Join(t.TempDir(), "compact.db")
	err = persist.Compact(src, dst)
	assert.ErrorIs(t, err, persist.ErrLocked, "Compact refuses a log a flowd holds")
	require.NoError(t, db.Close())

	require.NoError(t, persist.Compact(src, dst))
	srcInfo, err := os.Stat(src)
	require.NoError(t, err)
	dstInfo, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Less(t, dstInfo.Size(), srcInfo.Size()/2, "compaction gives the pruned space back")
	assert.Equal(t, os.FileMode(0o600), dstInfo.Mode().Perm())

	out := openDB(t, dst, persist.Options{})
	h, err := out.History(bg, live.ID)
	require.NoError(t, err)
	assert.Len(t, h, 1)
	v, ok, err := out.Secret(bg, "token/github")
	require.NoError(t, err, "the compacted log opens its secrets with the copied key")
	assert.True(t, ok)
	assert.Equal(t, []byte("gho_x"), v)
	next := appendRecs(t, out, nil, live.URLIssued())[0]
	assert.Greater(t, next.Seq, h[0].Seq, "seqs keep increasing in the compacted log")

	err = persist.Compact(src, dst)
	assert.Error(t, err, "Compact never overwrites")
	assert.Contains(t, err.Error(), "already exists")
}

func TestAppendRefusesUnusableFlowID(t *testing.T) {
	db := newDB(t)
	f := logtest.NewFlow(logtest.Base)
	rec := f.Created()
	rec.Flow = ""
	err := db.Append(bg, []states.Record{rec}, nil)
	require.Error(t, err)
	assert.False(t, errors.Is(err, engine.ErrConflict), "an empty flow id is a bug, not a race")
}

// A secret that is only ever overwritten is found by every read, however
// the overwrites group into commits: it never moves while present. Both
// kinds: one written with a flow's first record (numbered with the flow)
// and one written on its own (kept by name).
func TestSecretOverwrittenIsAlwaysFound(t *testing.T) {
	db := newDB(t)
	f := logtest.NewFlow(logtest.Base)
	appendRecs(t, db, map[string][]byte{"verifier/" + f.ID: []byte("v0")}, f.Created())
	appendRecs(t, db, map[string][]byte{"token/github": []byte("v0")})
	for _, name := range []string{"verifier/" + f.ID, "token/github"} {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				_, ok, err := db.Secret(bg, name)
				if !assert.NoError(t, err) || !assert.True(t, ok, "overwritten secret %s was reported absent", name) {
					cancel()
					return
				}
			}
		}()
		const writers, rounds = 16, 40
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range rounds {
					assert.NoError(t, db.Append(bg, nil, map[string][]byte{
						name:                     fmt.Appendf(nil, "w%d-%d", w, i),
						fmt.Sprintf("tmp/%d", w): nil,
					}))
				}
			})
		}
		wg.Wait()
		cancel()
		<-done
	}
}
