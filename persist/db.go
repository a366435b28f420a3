// Package persist is flowd's durable event log on bbolt. *DB implements
// engine.Log (checked in this package's tests: persist does not import
// engine, so embedding the log pulls in nothing of the engine's).
//
// Records are appended under a global sequence. Each flow is numbered by
// the seq of its first record, and its head (the seqs of its records), the
// live index (recovery reads live flows, not the whole history) and the
// ended index (Prune finds old finished flows without a full scan) are keyed
// by that number, so appends write near the tail of every tree; one index
// maps flow ids to numbers. Secrets are sealed with AES-256-GCM (package
// seal) under a key file beside the database. docs/storage.md describes the
// layout, durability, group commit, retention and compaction.
package persist

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/seal"
)

// Errors Open and the log's methods return, wrapped with the path or the
// record concerned and what to do next.
var (
	// ErrLocked: another open handle, usually a running flowd, holds the
	// database's lock.
	ErrLocked = errors.New("database is locked: a running flowd probably holds it (stop it, or ask it through flowctl)")
	// ErrNotLog: the file is not a bbolt database, or not flowd's.
	ErrNotLog = errors.New("not a flowd event log")
	// ErrNewerFormat: the database was written by a newer flowd.
	ErrNewerFormat = errors.New("event log written by a newer flowd")
	// ErrOlderFormat: the database has a layout this flowd no longer reads.
	ErrOlderFormat = errors.New("event log written by an older flowd")
	// ErrCorrupt: the database's structure or indexes are damaged. An
	// undecodable record is reported as a *states.RecordError wrapping
	// states.ErrUndecodable instead.
	ErrCorrupt = errors.New("event log is damaged")
	// ErrReadOnly: a write on a log opened with Options.ReadOnly.
	ErrReadOnly = errors.New("event log is open read-only")
	// ErrKeyMismatch: the key file does not open the database's sealed secrets.
	ErrKeyMismatch = errors.New("key file does not match the database")
)

// Options configures Open. The zero value is a read-write log with sane defaults.
type Options struct {
	// Timeout bounds the wait for the file lock. Default 1s; negative means
	// try once. bbolt's own default waits forever, which would hang a
	// second flowd or an inspect run behind a running daemon.
	Timeout time.Duration
	// KeyFile is the sealing key's path. Default: the database path + ".key".
	KeyFile string
	// ReadOnly opens the log for reading (flowctl inspect --db). It takes a
	// shared lock, so it fails with ErrLocked while a flowd holds the
	// database. The key file is read only when a secret is.
	ReadOnly bool
	// NoSync skips fsync on commit. For benchmarks only: a crash or power
	// loss can then lose acknowledged appends or corrupt the file.
	NoSync bool
	// MaxBatchSize caps how many concurrent appends share one commit.
	// Default 1000.
	MaxBatchSize int
	// MaxBatchDelay makes each commit wait this long for more appends to
	// join it, unless MaxBatchSize are already queued. Default 0: commit
	// at once; appends that arrive during a commit's fsync share the next
	// one anyway, so waiting only adds latency on most disks.
	MaxBatchDelay time.Duration
	// InitialMmapSize is the initial size of bbolt's memory map, in bytes.
	// A writer that must grow the map waits for every open read, so a
	// large log served to slow readers wants this at least the file's
	// expected size. Default 0: bbolt's growth policy.
	InitialMmapSize int
}

// Defaults.
const (
	DefaultTimeout      = time.Second
	DefaultMaxBatchSize = 1000
)

func (o Options) withDefaults(path string) Options {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Timeout < 0 {
		// bbolt treats 0 as forever; a tiny timeout is "try once".
		o.Timeout = time.Nanosecond
	}
	if o.KeyFile == "" {
		o.KeyFile = path + ".key"
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = DefaultMaxBatchSize
	}
	return o
}

// DB is the bbolt event log. It is safe for concurrent use. Close it when done.
type DB struct {
	bolt *bolt.DB
	path string
	opts Options

	commits *committer
	// inTx is the open group commit's buckets, opened once per
	// transaction instead of once per append in it (only the committer
	// touches it, inside its write transaction).
	inTx    txBuckets
	secrets secretIndex
	ids     idIndex
	live    liveHeads

	closeOnce sync.Once

	keyOnce sync.Once
	sealer  *seal.Sealer
	keyErr  error
}

// Bucket names; docs/storage.md describes their keys and values.
var (
	bucketMeta        = []byte("meta")
	bucketEvents      = []byte("events")
	bucketIDs         = []byte("ids")
	bucketHeads       = []byte("heads")
	bucketLive        = []byte("live")
	bucketEnded       = []byte("ended")
	bucketSecrets     = []byte("secrets")
	bucketFlowSecrets = []byte("flowsecrets")

	allBuckets = [][]byte{bucketMeta, bucketEvents, bucketIDs, bucketHeads, bucketLive, bucketEnded, bucketSecrets, bucketFlowSecrets}

	metaFormat   = []byte("format")
	metaKeyCheck = []byte("keycheck")
)

// format names the layout in meta/format. A change of layout that older
// code cannot read gets a new number. Version 1 (flowd before the indexes
// were keyed by flow number) is refused with ErrOlderFormat: flowd had no
// users then, so there is no migration.
const (
	formatName    = "flowd-events"
	formatVersion = 2
)

var formatValue = fmt.Appendf(nil, "%s %d", formatName, formatVersion)

// keyCheckName is the name the key check value is sealed under.
const keyCheckName = "flowd/keycheck"

// Open opens the event log at path, creating it (mode 0600) and its key
// file if neither exists. It fails within about Options.Timeout when
// another process or handle holds the database (ErrLocked), on a file that
// is not a flowd event log (ErrNotLog), on a key file that is missing while
// the database holds sealed secrets, has the wrong size or mode (see
// package seal), and on a damaged record among those recovery reads (the
// live flows' and the log's last).
func Open(path string, opts Options) (*DB, error) {
	opts = opts.withDefaults(path)
	info, err := os.Stat(path)
	switch {
	case err == nil && !info.Mode().IsRegular():
		return nil, fmt.Errorf("open event log %s: %w: it is not a regular file", path, ErrNotLog)
	case err == nil && info.Size() == 0 && opts.ReadOnly:
		// bbolt would try to initialize it, and fail on the read-only handle.
		return nil, fmt.Errorf("open event log %s read-only: %w: the file is empty", path, ErrNotLog)
	case errors.Is(err, fs.ErrNotExist) && opts.ReadOnly:
		return nil, fmt.Errorf("open event log %s read-only: no such file (flowd creates it on first start): check the path", path)
	}
	if err := checkTruncated(path); err != nil {
		return nil, err
	}
	bdb, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		setGrowth(bdb, fi.Size()) // before anything writes: Prune does not go through the committer
	}
	db := &DB{bolt: bdb, path: path, opts: opts}
	db.secrets.pending = map[string]pendingSecret{}
	db.ids.pending = map[string]uint64{}
	db.live = liveHeads{heads: map[string]liveHead{}, pending: map[string]*liveHead{}}
	db.commits = &committer{db: bdb, maxBatch: opts.MaxBatchSize, linger: opts.MaxBatchDelay,
		begin: func(tx *bolt.Tx) {
			db.inTx = txBuckets{}
			setGrowth(bdb, tx.Size())
			db.secrets.begin()
			db.ids.begin()
			db.live.begin()
		},
		settle: func(committed bool) {
			db.inTx = txBuckets{}
			db.secrets.settle(committed)
			db.ids.settle(committed)
			db.live.settle(committed)
		},
		maintain: func() func(*bolt.Tx) error {
			if db.ids.due() {
				return db.ids.checkpoint
			}
			return nil
		},
	}
	if err := db.init(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if err := db.verify(); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open event log %s: %w; the file is damaged: keep a copy for a bug report, then restore a backup or move it aside to start empty", path, err)
	}
	return db, nil
}

// How the file grows. bbolt maps the file in sizes that double, and until
// the map passes AllocSize (default 16 MiB) it makes the file as large as
// the map; beyond, it grows the file AllocSize at a time. A log of 17 MiB
// of pages was thus a 33 MiB file. flowd grows it by a sixteenth of its
// size instead (at least growthMin, at most bbolt's 16 MiB), so the file
// is at most about 6% larger than its pages, for one more truncate and
// fsync each time it grows that much.
const (
	growthMin     = 256 << 10
	growthDivisor = 16
	growthMax     = 16 << 20 // bbolt's default AllocSize
)

// setGrowth sets the growth step for a file of size bytes. It runs inside
// a write transaction, which is what reads it when it commits.
func setGrowth(b *bolt.DB, size int64) {
	b.AllocSize = int(min(max(size/growthDivisor, growthMin), growthMax))
}

func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	// A truncated file leaves pages of the memory map past its end, and
	// reading one raises SIGBUS: fatal to the process unless turned into
	// a panic, recovered here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("open event log %s: %w: bbolt: %v; the file is damaged or truncated: keep a copy for a bug report, then restore a backup or move it aside to start empty", path, ErrNotLog, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.Timeout,
		NoSync:          opts.NoSync,
		ReadOnly:        opts.ReadOnly,
		InitialMmapSize: opts.InitialMmapSize,
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open event log %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("open event log %s: %w (bbolt: %v): check the path", path, ErrNotLog, err)
	default:
		return nil, fmt.Errorf("open event log %s: %w", path, err)
	}
}

// init creates or checks the buckets and the format, and loads the key.
func (db *DB) init() error {
	var hasSecrets bool
	var keyCheck []byte
	check := func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			var names []string
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				names = append(names, string(name))
				return nil
			})
			if len(names) > 0 || !tx.Writable() {
				return fmt.Errorf("%w: it has no flowd meta bucket (buckets: %q): check the path", ErrNotLog, names)
			}
			for _, name := range allBuckets {
				if _, err := tx.CreateBucket(name); err != nil {
					return fmt.Errorf("create bucket %s: %w", name, err)
				}
			}
			meta = tx.Bucket(bucketMeta)
			if err := meta.Put(metaFormat, formatValue); err != nil {
				return fmt.Errorf("write format: %w", err)
			}
		}
		if err := checkFormat(meta.Get(metaFormat)); err != nil {
			return err
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: bucket %s is missing", ErrCorrupt, name)
			}
		}
		k, _ := tx.Bucket(bucketSecrets).Cursor().First()
		f, _ := tx.Bucket(bucketFlowSecrets).Cursor().First()
		hasSecrets = k != nil || f != nil
		keyCheck = cloneBytes(meta.Get(metaKeyCheck))
		return nil
	}
	if db.opts.ReadOnly {
		if err := db.view(check); err != nil {
			return fmt.Errorf("open event log %s: %w", db.path, err)
		}
		return nil // the key is loaded when a secret is read
	}
	if err := db.update(check); err != nil {
		return fmt.Errorf("open event log %s: %w", db.path, err)
	}

	key, err := seal.LoadKey(db.opts.KeyFile)
	switch {
	case errors.Is(err, seal.ErrKeyMissing) && hasSecrets:
		return fmt.Errorf("open event log %s: %w: %s; the database holds sealed secrets that a new key could not open: restore the key file it was created with, or move the database aside to start empty (its tokens are then lost)", db.path, seal.ErrKeyMissing, db.opts.KeyFile)
	case errors.Is(err, seal.ErrKeyMissing):
		if key, err = seal.CreateKey(db.opts.KeyFile); err != nil {
			return fmt.Errorf("open event log %s: %w", db.path, err)
		}
	case err != nil:
		return fmt.Errorf("open event log %s: %w", db.path, err)
	}
	sealer, err := seal.New(key)
	if err != nil {
		return fmt.Errorf("open event log %s: %w", db.path, err)
	}
	if keyCheck != nil {
		if _, err := sealer.Open(keyCheckName, keyCheck); err == nil {
			keyCheck = nil // matches: nothing to write
		} else if hasSecrets {
			return fmt.Errorf("open event log %s: %w %s: it was replaced or belongs to another database; restore the key file this database was created with", db.path, ErrKeyMismatch, db.opts.KeyFile)
		} else {
			keyCheck = []byte{} // no secrets to lose: adopt the new key
		}
	} else {
		keyCheck = []byte{}
	}
	if keyCheck != nil {
		sealed, err := sealer.Seal(keyCheckName, []byte(formatName))
		if err != nil {
			return fmt.Errorf("open event log %s: %w", db.path, err)
		}
		if err := db.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaKeyCheck, sealed) }); err != nil {
			return fmt.Errorf("open event log %s: write key check: %w", db.path, err)
		}
	}
	db.keyOnce.Do(func() { db.sealer = sealer })
	return nil
}

func checkFormat(v []byte) error {
	var name string
	var version int
	if _, err := fmt.Sscanf(string(v), "%s %d", &name, &version); err != nil || name != formatName {
		return fmt.Errorf("%w: meta format is %q", ErrNotLog, v)
	}
	if version > formatVersion {
		return fmt.Errorf("%w (format %d, this flowd reads %d): upgrade flowd", ErrNewerFormat, version, formatVersion)
	}
	if version < 1 {
		return fmt.Errorf("%w: meta format is %q", ErrCorrupt, v)
	}
	if version < formatVersion {
		return fmt.Errorf("%w (format %d, this flowd reads only format %d, and cannot convert it): to keep its history, export it with the flowd that wrote it (flowctl log export, while that flowd runs); then move the file and its key file aside and this flowd starts an empty log (its stored tokens are not carried over: connect the providers again)", ErrOlderFormat, version, formatVersion)
	}
	return nil
}

// verify reads the flow secrets' names into the secret index, the recent
// flows into the id index and the live flows' heads into the live heads,
// and decodes what recovery reads: every live flow's history and the log's
// last record, so a damaged record fails Open rather than a later recovery
// step.
func (db *DB) verify() error {
	return db.view(func(tx *bolt.Tx) error {
		b := buckets(tx)
		if err := db.secrets.load(b.flowSecrets); err != nil {
			return err
		}
		if err := db.ids.load(tx); err != nil {
			return err
		}
		if err := b.live.ForEach(func(num, flow []byte) error {
			_, h, err := b.liveHistory(num, flow)
			if err == nil && !db.opts.ReadOnly {
				db.live.heads[string(flow)] = liveHead{num: decodeSeq(num), h: h}
			}
			return err
		}); err != nil {
			return err
		}
		seq, v := b.events.Cursor().Last()
		if seq == nil {
			return nil
		}
		_, err := decodeRecord(seq, v, recordCheck{}, b.flowOf)
		return err
	})
}

// sealerFor returns the sealer, loading the key file on first use in a
// read-only log.
func (db *DB) sealerFor() (*seal.Sealer, error) {
	db.keyOnce.Do(func() {
		key, err := seal.LoadKey(db.opts.KeyFile)
		if err != nil {
			db.keyErr = fmt.Errorf("read secrets of %s: %w", db.path, err)
			return
		}
		db.sealer, db.keyErr = seal.New(key)
	})
	return db.sealer, db.keyErr
}

// Path returns the database file's path.
func (db *DB) Path() string { return db.path }

// Stats counts the log's group commits since Open.
type Stats struct {
	// Commits is the number of group commits, each one bbolt transaction
	// and its fsyncs.
	Commits uint64
	// Appends is the number of appends they carried: Appends/Commits is
	// how many appends shared each commit.
	Appends uint64
}

// Stats returns the log's counters. It is cheap and safe to call at any time.
func (db *DB) Stats() Stats {
	if db.commits == nil {
		return Stats{}
	}
	return Stats{Commits: db.commits.commits.Load(), Appends: db.commits.committed.Load()}
}

// Close closes the database, waiting for reads and writes under way. It
// first writes the recent flows' numbers to the ids bucket, so the next
// open need not find them among the records; if that fails, the next open
// does.
func (db *DB) Close() error {
	if !db.opts.ReadOnly {
		db.closeOnce.Do(func() {
			db.ids.mu.RLock()
			n := len(db.ids.recent)
			db.ids.mu.RUnlock()
			if n > 0 {
				_ = db.commits.do(db.ids.checkpoint)
			}
		})
	}
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close event log %s: %w", db.path, err)
	}
	return nil
}

// view and update run a transaction and turn a bbolt panic (a damaged page
// can cause one) into ErrCorrupt: never a panic reaching the user.
func (db *DB) view(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // see openBolt
	defer recoverCorrupt(&err)
	return classify(db.bolt.View(fn))
}

func (db *DB) update(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // see openBolt
	defer recoverCorrupt(&err)
	return classify(db.bolt.Update(db.commits.faulty(fn)))
}

// classify wraps bbolt's and the file system's failures into the engine's
// storage error classes, the original error still wrapped beside: a full
// disk or quota is engine.ErrStorageFull, a closed database
// engine.ErrLogUnavailable. Other errors pass unchanged.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrStorageFull), errors.Is(err, engine.ErrLogUnavailable):
		return err
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return fmt.Errorf("%w: %w", engine.ErrStorageFull, err)
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("%w: %w (the log was closed)", engine.ErrLogUnavailable, err)
	}
	return err
}

func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: bbolt: %v", ErrCorrupt, r)
	}
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
