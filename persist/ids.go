package persist

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// idIndex finds a flow's number by its id. Ids are random, so the ids
// bucket is the one index whose keys land anywhere in its tree: writing one
// entry per new flow would cost every commit a random page per flow. The
// entries of recent flows are therefore kept in memory and written to the
// ids bucket together, in key order, by a checkpoint every ckptEvery new
// flows (and at Close): the events bucket is the truth they are rebuilt
// from at open, by reading the records after the last checkpoint (meta
// ids-through) for first records.
//
// Only the committer changes it, through a pending overlay applied once
// its transaction committed, as for secretIndex. A reader looks a flow up
// in memory before it begins its read transaction: an entry leaves memory
// only after the checkpoint that wrote it committed, so a reader that does
// not find it in memory finds it in the bucket, or the flow did not exist
// when it looked.
type idIndex struct {
	mu      sync.RWMutex
	recent  map[string]uint64 // flows numbered after through: id → number
	through uint64            // every flow numbered up to here is in the ids bucket (or pruned)
	ckpts   uint64            // checkpoints committed since open

	// The open write transaction's changes. Only the committer touches them.
	pending map[string]uint64
	ckpt    uint64 // through after this transaction's checkpoint, 0 if none
}

// ckptEvery is how many new flows wait in memory for a checkpoint. Each
// checkpoint writes them in one commit; the memory it costs is about 100
// bytes a flow, and an open after a crash reads up to that many flows'
// records to rebuild it.
var ckptEvery = 2048 // a variable so tests can make checkpoints frequent

var metaIDsThrough = []byte("ids-through")

// load rebuilds the index at open: the checkpoint, then every first record
// after it. A record it cannot decode is passed over: it cannot name its
// flow (reads of it report the damage; a live flow's is refused by verify).
func (x *idIndex) load(t *bolt.Tx) error {
	b := buckets(t)
	var through uint64
	if v := t.Bucket(bucketMeta).Get(metaIDsThrough); v != nil {
		if through = decodeSeq(v); through == 0 {
			return fmt.Errorf("%w: meta %s is %d bytes", ErrCorrupt, metaIDsThrough, len(v))
		}
	}
	recent := map[string]uint64{}
	c := b.events.Cursor()
	for k, v := c.Seek(encodeSeq(through + 1)); k != nil; k, v = c.Next() {
		seq := decodeSeq(k)
		if len(v) > 0 && v[0] == formJSON && !bytes.Contains(v, []byte(`"flow_seq":1,`)) {
			continue // whole JSON, and not a first record
		}
		if flow := firstFlow(seq, v); flow != "" && flow != "?" && b.heads.Get(k) != nil {
			recent[flow] = seq
		}
	}
	x.mu.Lock()
	x.recent, x.through = recent, through
	x.mu.Unlock()
	return nil
}

// lookup returns the number of flow if it is a recent one, else 0: look in
// the ids bucket then, in a read transaction begun after this call.
func (x *idIndex) lookup(flow string) uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.recent[flow]
}

// checkpoints counts the checkpoints committed: a flow created after a
// reader looked for it is in memory (recent or pending) unless a
// checkpoint committed since, which Append's new-flow check relies on.
func (x *idIndex) checkpoints() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.ckpts
}

// find is lookup inside the open write transaction.
func (x *idIndex) find(flow string) uint64 {
	if num, ok := x.pending[flow]; ok {
		return num
	}
	return x.lookup(flow)
}

// add numbers a new flow in the open write transaction.
func (x *idIndex) add(flow string, num uint64) { x.pending[flow] = num }

// begin starts a write transaction's overlay.
func (x *idIndex) begin() {
	clear(x.pending)
	x.ckpt = 0
}

// settle applies the overlay after a commit, or drops it after a rollback.
func (x *idIndex) settle(committed bool) {
	if committed && (len(x.pending) > 0 || x.ckpt > 0) {
		x.mu.Lock()
		for flow, num := range x.pending {
			x.recent[flow] = num
		}
		if x.ckpt > 0 {
			for flow, num := range x.recent {
				if num <= x.ckpt {
					delete(x.recent, flow)
				}
			}
			x.through = x.ckpt
			x.ckpts++
		}
		x.mu.Unlock()
	}
	clear(x.pending)
	x.ckpt = 0
}

// due says whether enough flows wait for a checkpoint.
func (x *idIndex) due() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.recent) >= ckptEvery
}

// checkpoint writes every flow numbered so far into the ids bucket, in key
// order, and moves ids-through up to the last seq given. It runs as a
// function of a group commit, so it also writes the flows that functions
// before it in the same transaction created.
func (x *idIndex) checkpoint(t *bolt.Tx) error {
	b := buckets(t)
	x.mu.RLock()
	type entry struct {
		flow string
		num  uint64
	}
	all := make([]entry, 0, len(x.recent)+len(x.pending))
	for flow, num := range x.recent {
		if _, over := x.pending[flow]; !over {
			all = append(all, entry{flow, num})
		}
	}
	x.mu.RUnlock()
	for flow, num := range x.pending {
		all = append(all, entry{flow, num})
	}
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.flow, b.flow) })
	for _, e := range all {
		num := encodeSeq(e.num)
		if b.heads.Get(num) == nil {
			continue // pruned since
		}
		if err := b.ids.Put([]byte(e.flow), num); err != nil {
			return fmt.Errorf("checkpoint the number of flow %q: %w", e.flow, err)
		}
	}
	through := b.events.Sequence()
	if err := t.Bucket(bucketMeta).Put(metaIDsThrough, encodeSeq(through)); err != nil {
		return fmt.Errorf("checkpoint flow numbers: %w", err)
	}
	x.ckpt = through
	return nil
}
