package persist

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"flowd.local/flowd/states"
)

// The log's methods: *DB implements engine.Log.

// tx wraps one transaction's buckets.
type tx struct {
	events, flows, heads, live, ended, secrets *bolt.Bucket
}

func buckets(t *bolt.Tx) tx {
	b := tx{
		events:  t.Bucket(bucketEvents),
		flows:   t.Bucket(bucketFlows),
		heads:   t.Bucket(bucketHeads),
		live:    t.Bucket(bucketLive),
		ended:   t.Bucket(bucketEnded),
		secrets: t.Bucket(bucketSecrets),
	}
	if t.Writable() {
		// Events keys only ever grow, and the ended index's nearly so:
		// full pages instead of bbolt's half-full default keep the file
		// about half the size. The other indexes take random keys.
		b.events.FillPercent = 1.0
		b.ended.FillPercent = 0.9
	}
	return b
}

// present is the value of set-like buckets (live, ended), whose keys say
// everything. It is not empty so a Get tells present from absent plainly.
var present = []byte{1}

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
				return fmt.Errorf("append: records of flows %s and %s in one append: %w", states.ShortID(flow), states.ShortID(r.Flow), states.ErrConflict)
			}
			if want := recs[0].FlowSeq + uint64(i); r.FlowSeq != want {
				return fmt.Errorf("append flow %s: flow_seq %d where %d was due: %w", states.ShortID(flow), r.FlowSeq, want, states.ErrConflict)
			}
		}
	}
	// Seal outside the transaction: it draws random nonces, and a group
	// commit may run the transaction function more than once.
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
		b := buckets(t)
		if len(recs) > 0 {
			var h head
			if v := b.heads.Get([]byte(flow)); v != nil {
				var ok bool
				if h, ok = decodeHead(v); !ok {
					return fmt.Errorf("%w: head of flow %s is %d bytes", ErrCorrupt, states.ShortID(flow), len(v))
				}
			}
			if recs[0].FlowSeq != h.last+1 {
				out.err = fmt.Errorf("append flow %s: flow_seq %d does not follow %d: %w", states.ShortID(flow), recs[0].FlowSeq, h.last, states.ErrConflict)
				return nil
			}
			for _, r := range recs {
				seq, err := b.events.NextSequence()
				if err != nil {
					return fmt.Errorf("next seq: %w", err)
				}
				r.Seq = seq
				if r.Version == 0 {
					r.Version = states.SchemaVersion
				}
				v, err := r.Encode()
				if err != nil {
					return err
				}
				key := encodeSeq(seq)
				if err := b.events.Put(key, v); err != nil {
					return fmt.Errorf("put record seq=%d: %w", seq, err)
				}
				if err := b.flows.Put(flowKey(flow, r.FlowSeq), key); err != nil {
					return fmt.Errorf("index record seq=%d: %w", seq, err)
				}
				if r.To.Terminal() && h.ended == nil {
					h.ended = endedTime(r.Time)
					if err := b.ended.Put(endedKey(r.Time, flow), present); err != nil {
						return fmt.Errorf("index end of flow %s: %w", states.ShortID(flow), err)
					}
				}
				out.seqs = append(out.seqs, seq)
			}
			h.last = recs[len(recs)-1].FlowSeq
			if err := b.heads.Put([]byte(flow), h.encode()); err != nil {
				return fmt.Errorf("put head of flow %s: %w", states.ShortID(flow), err)
			}
			var err error
			if recs[len(recs)-1].To.Terminal() {
				err = b.live.Delete([]byte(flow))
			} else if b.live.Get([]byte(flow)) == nil {
				// Only when it is not there yet: a Put of the same value
				// would still dirty a page that the commit must write.
				err = b.live.Put([]byte(flow), present)
			}
			if err != nil {
				return fmt.Errorf("index live flow %s: %w", states.ShortID(flow), err)
			}
		}
		for k, v := range sealed {
			var err error
			if v == nil {
				err = b.secrets.Delete([]byte(k))
			} else {
				err = b.secrets.Put([]byte(k), v)
			}
			if err != nil {
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

// history reads a flow's records through the flows index.
func (b tx) history(flow string) ([]states.Record, error) {
	p := flowPrefix(flow)
	var out []states.Record
	c := b.flows.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if len(k) != len(p)+8 {
			return out, fmt.Errorf("%w: flows index key of %d bytes for flow %s", ErrCorrupt, len(k), states.ShortID(flow))
		}
		flowSeq := binary.BigEndian.Uint64(k[len(p):])
		ev := b.events.Get(v)
		if ev == nil {
			return out, &states.RecordError{Seq: decodeSeq(v), Flow: flow, FlowSeq: flowSeq, Err: fmt.Errorf("%w: the flows index names a record that is not there", ErrCorrupt)}
		}
		rec, err := decodeRecord(v, ev, flow, flowSeq)
		if err != nil {
			return out, err
		}
		if want := uint64(len(out) + 1); flowSeq != want {
			return out, &states.RecordError{Seq: rec.Seq, Flow: flow, FlowSeq: flowSeq, Err: fmt.Errorf("%w: flow_seq %d where %d was due", ErrCorrupt, flowSeq, want)}
		}
		out = append(out, rec)
	}
	return out, nil
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
	err := db.view(func(t *bolt.Tx) error {
		var err error
		out, err = buckets(t).history(flow)
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
		return b.live.ForEach(func(flow, _ []byte) error {
			h, err := b.history(string(flow))
			if err != nil {
				return err
			}
			if len(h) == 0 {
				return fmt.Errorf("%w: live flow %s has no records", ErrCorrupt, states.ShortID(string(flow)))
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
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if after == ^uint64(0) {
			return nil
		}
		var chunk []states.Record
		var bad error
		err := db.view(func(t *bolt.Tx) error {
			c := buckets(t).events.Cursor()
			for k, v := c.Seek(encodeSeq(after + 1)); k != nil && len(chunk) < scanChunk; k, v = c.Next() {
				rec, err := decodeRecord(k, v, "", 0)
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
	var sealed []byte
	err := db.view(func(t *bolt.Tx) error {
		sealed = cloneBytes(buckets(t).secrets.Get([]byte(key)))
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
				flow := ek[endedTimeLen:]
				if b.live.Get(flow) != nil {
					// Its last record is not terminal (a record after its
					// end): live flows are never pruned.
					continue
				}
				if err := b.deleteFlow(string(flow)); err != nil {
					return err
				}
				if err := b.ended.Delete(ek); err != nil {
					return fmt.Errorf("delete ended index of flow %s: %w", states.ShortID(string(flow)), err)
				}
				n++
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

// deleteFlow deletes a flow's records, index entries and head.
func (b tx) deleteFlow(flow string) error {
	p := flowPrefix(flow)
	var idx, seqs [][]byte
	c := b.flows.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		idx = append(idx, cloneBytes(k))
		seqs = append(seqs, cloneBytes(v))
	}
	for i := range idx {
		if err := b.events.Delete(seqs[i]); err != nil {
			return fmt.Errorf("delete record seq=%d: %w", decodeSeq(seqs[i]), err)
		}
		if err := b.flows.Delete(idx[i]); err != nil {
			return fmt.Errorf("delete index of flow %s: %w", states.ShortID(flow), err)
		}
	}
	if err := b.heads.Delete([]byte(flow)); err != nil {
		return fmt.Errorf("delete head of flow %s: %w", states.ShortID(flow), err)
	}
	return nil
}
