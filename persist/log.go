package persist

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// The log's methods: *DB implements engine.Log.

// tx wraps one transaction's buckets.
type tx struct {
	events, ids, heads, live, ended, secrets, flowSecrets *bolt.Bucket
}

func buckets(t *bolt.Tx) tx {
	b := tx{
		events:      t.Bucket(bucketEvents),
		ids:         t.Bucket(bucketIDs),
		heads:       t.Bucket(bucketHeads),
		live:        t.Bucket(bucketLive),
		ended:       t.Bucket(bucketEnded),
		secrets:     t.Bucket(bucketSecrets),
		flowSecrets: t.Bucket(bucketFlowSecrets),
	}
	if t.Writable() {
		// bbolt splits a page at FillPercent when it overflows (default
		// half): right for random keys, a waste for keys that arrive in
		// order, which then leave every page half empty. Events keys only
		// grow; heads, live and flowsecrets keys are numbers given in
		// order (heads values grow a byte or two per record, hence the
		// slack); ended keys are end times, nearly in order. secrets
		// (tokens) are few, inserted rarely and rewritten in place: packed,
		// a rewrite of a few of them dirties fewer pages. Only ids takes
		// many random keys.
		b.events.FillPercent = 1.0
		b.heads.FillPercent = 0.9
		b.live.FillPercent = 0.9
		b.ended.FillPercent = 0.9
		b.flowSecrets.FillPercent = 0.9
		b.secrets.FillPercent = 0.9
	}
	return b
}

// txBuckets caches one write transaction's buckets.
type txBuckets struct {
	t *bolt.Tx
	b tx
}

// buckets returns t's buckets, opening them on t's first call.
func (c *txBuckets) buckets(t *bolt.Tx) tx {
	if c.t != t {
		c.t, c.b = t, buckets(t)
	}
	return c.b
}

// present is the value of the ended index, whose keys say everything. It
// is not empty so a Get tells present from absent plainly.
var present = []byte{1}

// flow finds a flow by id: its number and head, or number 0 for a flow
// the log does not hold. recent is the number the id index had for it in
// memory, or 0 to look in the ids bucket. An id whose head is gone (its
// flow was pruned) is unknown.
func (b tx) flow(flow string, recent uint64) (uint64, head, error) {
	num := recent
	if num == 0 {
		v := b.ids.Get([]byte(flow))
		if v == nil {
			return 0, head{}, nil
		}
		if num = decodeSeq(v); num == 0 {
			return 0, head{}, fmt.Errorf("%w: flow %s has a number of %d bytes", ErrCorrupt, states.ShortID(flow), len(v))
		}
	}
	hv := b.heads.Get(encodeSeq(num))
	if hv == nil {
		return 0, head{}, nil
	}
	h, err := decodeHead(num, hv)
	if err != nil {
		return 0, head{}, fmt.Errorf("flow %s: %w", states.ShortID(flow), err)
	}
	return num, h, nil
}

// Append implements engine.Log. The compare-and-set on the flow's last
// FlowSeq runs inside the write transaction. Concurrent appends share
// commits (see committer): one fsync for every append that arrived while
// the previous commit was syncing, up to MaxBatchSize.
func (db *DB) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.opts.ReadOnly {
		return fmt.Errorf("append: %w", ErrReadOnly)
	}
	if len(recs) == 0 && len(secrets) == 0 {
		return nil
	}
	var flow string
	if len(recs) > 0 {
		flow = recs[0].Flow
		if flow == "" || len(flow) > maxFlowID {
			return fmt.Errorf("append: flow id of %d bytes (want 1 to %d)", len(flow), maxFlowID)
		}
		for i, r := range recs {
			if r.Flow != flow {
				return fmt.Errorf("append: records of flows %s and %s in one append: %w", states.ShortID(flow), states.ShortID(r.Flow), engine.ErrConflict)
			}
			if want := recs[0].FlowSeq + uint64(i); r.FlowSeq != want {
				return fmt.Errorf("append flow %s: flow_seq %d where %d was due: %w", states.ShortID(flow), r.FlowSeq, want, engine.ErrConflict)
			}
		}
	}
	// Encode and seal outside the transaction: it is shared by the whole
	// group commit, and sealing draws random nonces while a group commit
	// may run the transaction function more than once.
	enc := make([]encodedRecord, len(recs))
	for i, r := range recs {
		if r.Version == 0 {
			r.Version = states.SchemaVersion
		}
		var err error
		if enc[i], err = encodeRecord(r); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	sealed := make(map[string][]byte, len(secrets))
	if len(secrets) > 0 {
		sealer, err := db.sealerFor()
		if err != nil {
			return fmt.Errorf("append: %w", err)
		}
		for k, v := range secrets {
			if k == "" || len(k) > bolt.MaxKeySize {
				return fmt.Errorf("append: secret name of %d bytes", len(k))
			}
			if v == nil {
				sealed[k] = nil
				continue
			}
			if sealed[k], err = sealer.Seal(k, v); err != nil {
				return fmt.Errorf("append: %w", err)
			}
		}
	}

	// A new flow's id must not be taken. Looking it up in the ids bucket (a
	// tree of random keys) cost a quarter of the transaction function's time,
	// which every append in a group commit waits for: look before queuing
	// instead, and inside the transaction only in memory, where every flow
	// created since is, unless a checkpoint moved it out meanwhile.
	var absent bool
	var ckpts uint64
	if len(recs) > 0 && recs[0].FlowSeq == 1 {
		var err error
		if absent, ckpts, err = db.newFlowID(flow); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		if afterNewFlowCheck != nil {
			afterNewFlowCheck()
		}
	}

	// The transaction function only reads and writes the database: a
	// group commit may run it several times, and only the last run's out
	// counts. A conflict is an outcome, not an error: returning an error
	// would roll back the whole batch and rerun everyone's functions.
	var out struct {
		err  error
		seqs []uint64
	}
	fn := func(t *bolt.Tx) error {
		out.err, out.seqs = nil, out.seqs[:0]
		if err := ctx.Err(); err != nil {
			out.err = err
			return nil
		}
		b := db.inTx.buckets(t)
		if len(recs) > 0 {
			num, h, wasLive := db.live.find(flow)
			if !wasLive {
				recent := db.ids.find(flow)
				if recent != 0 || !absent || db.ids.checkpoints() != ckpts {
					var err error
					if num, h, err = b.flow(flow, recent); err != nil {
						return err
					}
				}
			}
			isNew := num == 0
			if recs[0].FlowSeq != h.last()+1 {
				out.err = fmt.Errorf("append flow %s: flow_seq %d does not follow %d: %w", states.ShortID(flow), recs[0].FlowSeq, h.last(), engine.ErrConflict)
				return nil
			}
			for i, r := range recs {
				seq, err := b.events.NextSequence()
				if err != nil {
					return fmt.Errorf("next seq: %w", err)
				}
				if num == 0 {
					num = seq // a new flow: numbered by its first record
				}
				if err := b.events.Put(encodeSeq(seq), enc[i].stored(seq, num)); err != nil {
					return fmt.Errorf("put record seq=%d: %w", seq, err)
				}
				h.seqs = append(h.seqs, seq)
				if r.To.Terminal() && !h.ended {
					h.ended = true
					if err := b.ended.Put(endedKey(r.Time, num), present); err != nil {
						return fmt.Errorf("index end of flow %s: %w", states.ShortID(flow), err)
					}
				}
				out.seqs = append(out.seqs, seq)
			}
			numKey := encodeSeq(num)
			if isNew {
				db.ids.add(flow, num) // the ids bucket gets it at the next checkpoint
			}
			if err := b.heads.Put(numKey, h.encode()); err != nil {
				return fmt.Errorf("put head of flow %s: %w", states.ShortID(flow), err)
			}
			// The live index changes only when the flow goes in or out of
			// it: a Put of the same value would still dirty a page that the
			// commit must write.
			isLive := !recs[len(recs)-1].To.Terminal()
			var err error
			switch {
			case isLive == wasLive:
			case isLive && (isNew || b.live.Get(numKey) == nil):
				err = b.live.Put(numKey, []byte(flow))
			case !isLive && !isNew:
				err = b.live.Delete(numKey)
			}
			if err != nil {
				return fmt.Errorf("index live flow %s: %w", states.ShortID(flow), err)
			}
			db.live.set(flow, num, h, isLive)
		}
		// A secret stays in the bucket it was created in until deleted.
		// New ones written with a flow's first records (its PKCE verifier)
		// are flow secrets, numbered in creation order like the flow and
		// mostly deleted with it; the others (tokens) are kept by name.
		newFlow := len(recs) > 0 && recs[0].FlowSeq == 1
		for k, v := range sealed {
			if err := db.secrets.set(b, k, v, newFlow); err != nil {
				return fmt.Errorf("put secret %q: %w", k, err)
			}
		}
		return nil
	}

	if err := db.commits.do(fn); err != nil {
		return fmt.Errorf("append to %s: %w", db.path, err)
	}
	if out.err != nil {
		return out.err
	}
	for i := range recs {
		recs[i].Seq = out.seqs[i]
		if recs[i].Version == 0 {
			recs[i].Version = states.SchemaVersion
		}
	}
	return nil
}

// afterNewFlowCheck, when set (by tests), runs between a new flow's id
// check and its transaction.
var afterNewFlowCheck func()

// newFlowID reports whether no flow has the id flow, and the checkpoints
// committed before it looked (see Append).
func (db *DB) newFlowID(flow string) (absent bool, ckpts uint64, err error) {
	ckpts = db.ids.checkpoints()
	recent := db.ids.lookup(flow) // before the read begins: see idIndex
	if recent != 0 {
		return false, ckpts, nil
	}
	err = db.view(func(t *bolt.Tx) error {
		// Only the buckets flow reads: opening a bucket allocates.
		b := tx{ids: t.Bucket(bucketIDs), heads: t.Bucket(bucketHeads)}
		num, _, err := b.flow(flow, 0)
		absent = num == 0
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("look up flow %s in %s: %w", states.ShortID(flow), db.path, err)
	}
	return absent, ckpts, nil
}

// history reads the records a flow's head names, checking each is the
// record the head says: flow (when known), seq and FlowSeq.
func (b tx) history(flow string, h head) ([]states.Record, error) {
	out := make([]states.Record, 0, len(h.seqs))
	for i, seq := range h.seqs {
		key := encodeSeq(seq)
		ev := b.events.Get(key)
		if ev == nil {
			return out, &states.RecordError{Seq: seq, Flow: flow, FlowSeq: uint64(i + 1), Err: fmt.Errorf("%w: the flow's head names a record that is not there", ErrCorrupt)}
		}
		rec, err := decodeRecord(key, ev, recordCheck{flow: flow, num: h.seqs[0], flowSeq: uint64(i + 1)}, b.flowOf)
		if err != nil {
			return out, err
		}
		if flow == "" {
			flow = rec.Flow
		}
		out = append(out, rec)
	}
	return out, nil
}

// flowOf returns the id of the flow numbered num, from its first record.
func (b tx) flowOf(num uint64) (string, error) {
	v := b.events.Get(encodeSeq(num))
	if v == nil {
		return "", fmt.Errorf("%w: its flow's first record, seq %d, is not there", ErrCorrupt, num)
	}
	if f := firstFlow(num, v); f != "" && f != "?" {
		return f, nil
	}
	return "", fmt.Errorf("%w: the record at seq %d does not start a flow", ErrCorrupt, num)
}

// liveHistory reads the head and history of the live flow num (a live
// index key) that the index says is flow.
func (b tx) liveHistory(num, flow []byte) ([]states.Record, head, error) {
	n := decodeSeq(num)
	if n == 0 || len(flow) == 0 {
		return nil, head{}, fmt.Errorf("%w: live index entry %x of %d bytes", ErrCorrupt, num, len(flow))
	}
	hv := b.heads.Get(num)
	if hv == nil {
		return nil, head{}, fmt.Errorf("%w: live flow %s has no head", ErrCorrupt, states.ShortID(string(flow)))
	}
	h, err := decodeHead(n, hv)
	if err != nil {
		return nil, head{}, fmt.Errorf("live flow %s: %w", states.ShortID(string(flow)), err)
	}
	recs, err := b.history(string(flow), h)
	return recs, h, err
}

// History implements engine.Log.
func (db *DB) History(ctx context.Context, flow string) ([]states.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if flow == "" || len(flow) > maxFlowID {
		return nil, nil // Append refuses such ids: no flow has one
	}
	var out []states.Record
	recent := db.ids.lookup(flow) // before the read begins: see idIndex
	err := db.view(func(t *bolt.Tx) error {
		b := buckets(t)
		num, h, err := b.flow(flow, recent)
		if err != nil || num == 0 {
			return err
		}
		out, err = b.history(flow, h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("history of flow %s in %s: %w", states.ShortID(flow), db.path, err)
	}
	return out, nil
}

// Live implements engine.Log. It reads the live flows in one read
// transaction and calls fn after it ends, so fn may append (recovery
// expires overdue flows from inside it) without deadlocking on the read.
func (db *DB) Live(ctx context.Context, fn func(history []states.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var all [][]states.Record
	err := db.view(func(t *bolt.Tx) error {
		b := buckets(t)
		return b.live.ForEach(func(num, flow []byte) error {
			h, _, err := b.liveHistory(num, flow)
			if err != nil {
				return err
			}
			all = append(all, h)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read live flows of %s: %w", db.path, err)
	}
	for _, h := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

// scanChunk is how many records Scan reads per read transaction: short
// transactions never hold up a writer that must grow the file's mapping.
const scanChunk = 512

// Scan implements engine.Log. It reads in chunks of short read
// transactions, so a record appended during a scan may or may not be seen,
// and one pruned during it may be seen or not; no record is seen twice.
// A damaged record ends the scan with an error naming it, after fn has
// seen every record before it.
func (db *DB) Scan(ctx context.Context, after uint64, fn func(states.Record) error) error {
	flows := map[uint64]string{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if after == ^uint64(0) {
			return nil
		}
		var chunk []states.Record
		var bad error
		// The flows of the records read, by number: records after a flow's
		// first name it by number, and mostly follow it closely.
		if len(flows) > 4*scanChunk {
			clear(flows)
		}
		err := db.view(func(t *bolt.Tx) error {
			b := buckets(t)
			c := b.events.Cursor()
			for k, v := c.Seek(encodeSeq(after + 1)); k != nil && len(chunk) < scanChunk; k, v = c.Next() {
				rec, err := decodeRecord(k, v, recordCheck{}, func(num uint64) (string, error) {
					if f, ok := flows[num]; ok {
						return f, nil
					}
					return b.flowOf(num)
				})
				if err == nil && rec.FlowSeq == 1 {
					flows[rec.Seq] = rec.Flow
				}
				if err != nil {
					bad = err
					return nil
				}
				chunk = append(chunk, rec)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scan %s: %w", db.path, err)
		}
		for _, r := range chunk {
			if err := fn(r); err != nil {
				return err
			}
		}
		if bad != nil {
			return fmt.Errorf("scan %s: %w", db.path, bad)
		}
		if len(chunk) < scanChunk {
			return nil
		}
		after = chunk[len(chunk)-1].Seq
	}
}

// Secret implements engine.Log.
func (db *DB) Secret(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	num := db.secrets.lookup(key) // before the read begins: see secretIndex
	var sealed []byte
	err := db.view(func(t *bolt.Tx) error {
		// Only the one bucket it reads: opening a bucket in a read
		// transaction reads its root.
		if num == 0 {
			sealed = cloneBytes(t.Bucket(bucketSecrets).Get([]byte(key)))
			return nil
		}
		v := t.Bucket(bucketFlowSecrets).Get(encodeSeq(num))
		if v == nil {
			return nil // deleted since the lookup
		}
		name, s, ok := decodeSecret(v)
		if !ok || name != key {
			return fmt.Errorf("%w: secret number %d does not hold %q", ErrCorrupt, num, key)
		}
		sealed = cloneBytes(s)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read secret %q from %s: %w", key, db.path, err)
	}
	if sealed == nil {
		return nil, false, nil
	}
	sealer, err := db.sealerFor()
	if err != nil {
		return nil, false, err
	}
	v, err := sealer.Open(key, sealed)
	if err != nil {
		return nil, false, fmt.Errorf("read secret from %s: %w", db.path, err)
	}
	return v, true, nil
}

// pruneChunk is how many flows one Prune transaction deletes, so pruning
// a large backlog does not build one huge transaction.
const pruneChunk = 256

// Prune implements engine.Log. It walks the ended index from the oldest
// end time up to endedBefore, deleting in transactions of pruneChunk flows;
// if ctx ends between two, it returns what it pruned so far with ctx's error.
func (db *DB) Prune(ctx context.Context, endedBefore time.Time) (int, error) {
	return db.PruneKeeping(ctx, endedBefore, nil)
}

// PruneKeeping implements engine.KeepingPruner: Prune, sparing the flows
// keep (nil: none) names. A spared flow stays in the ended index, to be
// looked at again by the next Prune.
func (db *DB) PruneKeeping(ctx context.Context, endedBefore time.Time, keep func(flow string) bool) (int, error) {
	if db.opts.ReadOnly {
		return 0, fmt.Errorf("prune: %w", ErrReadOnly)
	}
	cut := endedTime(endedBefore)
	total := 0
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var n int
		var done bool
		var next []byte
		err := db.update(func(t *bolt.Tx) error {
			b := buckets(t)
			c := b.ended.Cursor()
			k, _ := c.First()
			if from != nil {
				k, _ = c.Seek(from)
			}
			var victims [][]byte
			for ; ; k, _ = c.Next() {
				if k == nil {
					done = true
					break
				}
				if len(k) < endedTimeLen {
					return fmt.Errorf("%w: ended index key of %d bytes", ErrCorrupt, len(k))
				}
				if bytes.Compare(k[:endedTimeLen], cut) >= 0 {
					done = true
					break
				}
				if len(victims) == pruneChunk {
					break
				}
				victims = append(victims, cloneBytes(k))
			}
			for _, ek := range victims {
				if len(ek) != endedKeyLen {
					return fmt.Errorf("%w: ended index key of %d bytes", ErrCorrupt, len(ek))
				}
				num := ek[endedTimeLen:]
				if b.live.Get(num) != nil {
					// Its last record is not terminal (a record after its
					// end): live flows are never pruned.
					continue
				}
				if keep != nil {
					if v := b.events.Get(num); v != nil && keep(firstFlow(decodeSeq(num), v)) {
						continue
					}
				}
				deleted, err := b.deleteFlow(num)
				if err != nil {
					return err
				}
				if err := b.ended.Delete(ek); err != nil {
					return fmt.Errorf("delete ended index of flow number %d: %w", decodeSeq(num), err)
				}
				if deleted {
					n++
				}
			}
			if len(victims) > 0 {
				next = append(victims[len(victims)-1], 0)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", db.path, err)
		}
		total += n
		if done {
			return total, nil
		}
		from = next
	}
}

// deleteFlow deletes the records, head and id of the flow numbered num,
// and says whether there was one. The flow's id is read from its first
// record; if that record cannot be read, the id's entry stays behind, an
// id that History and Append treat as unknown since its head is gone.
func (b tx) deleteFlow(num []byte) (bool, error) {
	n := decodeSeq(num)
	hv := b.heads.Get(num)
	if hv == nil {
		return false, nil
	}
	h, err := decodeHead(n, hv)
	if err != nil {
		return false, err
	}
	var flow []byte
	if v := b.events.Get(num); v != nil {
		if id := firstFlow(n, v); id != "?" && id != "" {
			flow = []byte(id)
		}
	}
	for _, seq := range h.seqs {
		if err := b.events.Delete(encodeSeq(seq)); err != nil {
			return false, fmt.Errorf("delete record seq=%d: %w", seq, err)
		}
	}
	if err := b.heads.Delete(num); err != nil {
		return false, fmt.Errorf("delete head of flow number %d: %w", n, err)
	}
	if flow != nil && bytes.Equal(b.ids.Get(flow), num) {
		if err := b.ids.Delete(flow); err != nil {
			return false, fmt.Errorf("delete number of flow %s: %w", states.ShortID(string(flow)), err)
		}
	}
	return true, nil
}
