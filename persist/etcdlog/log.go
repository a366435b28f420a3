package etcdlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// The log's methods: *Log implements engine.Log.

// Key builders; the package comment describes the layout.

func (l *Log) recPrefix(flow string) string { return l.prefix + "r/" + flow + "/" }

func (l *Log) recKey(flow string, flowSeq uint64) string {
	return l.recPrefix(flow) + fmt.Sprintf("%016x", flowSeq)
}

func (l *Log) headKey(flow string) string   { return l.prefix + "h/" + flow }
func (l *Log) liveKey(flow string) string   { return l.prefix + "l/" + flow }
func (l *Log) endedMark(flow string) string { return l.prefix + "x/" + flow }
func (l *Log) secretKey(name string) string { return l.prefix + "s/" + name }

// endedKey is an ended-index key: the end time, sortable as text (seconds
// offset so negative times sort first, then nanoseconds, in hex), then the
// flow id.
func (l *Log) endedKey(t time.Time, flow string) string {
	return l.endedTimeKey(t) + "/" + flow
}

func (l *Log) endedTimeKey(t time.Time) string {
	return fmt.Sprintf("%sn/%016x%08x", l.prefix, uint64(t.Unix())^(1<<63), uint32(t.Nanosecond()))
}

// validFlow says whether a flow id can name keys: not empty, bounded, and
// without '/', which would let one flow's keys fall under another's
// prefix. The engine's state tokens are base64url and always qualify.
func validFlow(flow string) bool {
	return flow != "" && len(flow) <= maxFlowID && !strings.Contains(flow, "/")
}

// Append implements engine.Log in one etcd transaction: the compare-and-set
// on the flow's head, the records, the indexes and the secrets.
func (l *Log) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(recs) == 0 && len(secrets) == 0 {
		return nil
	}
	var (
		cmps []clientv3.Cmp
		ops  []clientv3.Op
		els  []clientv3.Op
		flow string
	)
	if len(recs) > 0 {
		flow = recs[0].Flow
		if !validFlow(flow) {
			return fmt.Errorf("append: flow id of %d bytes (want 1 to %d, without '/')", len(flow), maxFlowID)
		}
		if len(recs) > MaxRecords {
			return fmt.Errorf("append flow %s: %d records in one append (at most %d)", states.ShortID(flow), len(recs), MaxRecords)
		}
		for i, r := range recs {
			if r.Flow != flow {
				return fmt.Errorf("append: records of flows %s and %s in one append: %w", states.ShortID(flow), states.ShortID(r.Flow), engine.ErrConflict)
			}
			if want := recs[0].FlowSeq + uint64(i); r.FlowSeq != want {
				return fmt.Errorf("append flow %s: flow_seq %d where %d was due: %w", states.ShortID(flow), r.FlowSeq, want, engine.ErrConflict)
			}
		}
		first := recs[0].FlowSeq
		if first == 0 {
			return fmt.Errorf("append flow %s: flow_seq 0 continues nothing: %w", states.ShortID(flow), engine.ErrConflict)
		}
		head := l.headKey(flow)
		if first == 1 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(head), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.Value(head), "=", strconv.FormatUint(first-1, 10)))
		}
		els = append(els, clientv3.OpGet(head))
		ended := -1
		for i, r := range recs {
			r.Seq = 0 // derived from the revision when read
			if r.Version == 0 {
				r.Version = states.SchemaVersion
			}
			v, err := r.Encode()
			if err != nil {
				return fmt.Errorf("append flow %s: %w", states.ShortID(flow), err)
			}
			ops = append(ops, clientv3.OpPut(l.recKey(flow, r.FlowSeq), string(v)))
			if ended < 0 && r.To.Terminal() {
				ended = i
			}
		}
		last := recs[len(recs)-1]
		ops = append(ops, clientv3.OpPut(head, strconv.FormatUint(last.FlowSeq, 10)))
		if last.To.Terminal() {
			ops = append(ops, clientv3.OpDelete(l.liveKey(flow)))
		} else {
			ops = append(ops, clientv3.OpPut(l.liveKey(flow), ""))
		}
		if ended >= 0 {
			// Only the first terminal record dates the flow's end: a late
			// callback recorded after it does not make the flow younger.
			mark, nkey := l.endedMark(flow), l.endedKey(recs[ended].Time, flow)
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(mark), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(mark, nkey), clientv3.OpPut(nkey, "")},
				nil))
		}
	}
	for _, k := range sortedNames(secrets) {
		if k == "" {
			return errors.New("append: a secret with an empty name")
		}
		v := secrets[k]
		if v == nil {
			ops = append(ops, clientv3.OpDelete(l.secretKey(k)))
			continue
		}
		sealed, err := l.sealer.Seal(k, v)
		if err != nil {
			return fmt.Errorf("append: %w", err)
		}
		ops = append(ops, clientv3.OpPut(l.secretKey(k), string(sealed)))
	}

	var resp *clientv3.TxnResponse
	err := l.call(ctx, "append to etcd", func(ctx context.Context) (err error) {
		resp, err = l.cli.Txn(ctx).If(cmps...).Then(ops...).Else(els...).Commit()
		return err
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return fmt.Errorf("%w (the write may still have been applied)", err)
		}
		return err
	}
	if !resp.Succeeded {
		last := "none"
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			last = string(kvs[0].Value)
		}
		return fmt.Errorf("append flow %s: flow_seq %d does not follow the stored last flow_seq (%s): %w", states.ShortID(flow), recs[0].FlowSeq, last, engine.ErrConflict)
	}
	for i := range recs {
		recs[i].Seq = seqOf(resp.Header.Revision, i)
		if recs[i].Version == 0 {
			recs[i].Version = states.SchemaVersion
		}
	}
	return nil
}

// seqOf is the Seq of the i-th record written at revision rev.
func seqOf(rev int64, i int) uint64 { return uint64(rev)*seqPerRev + uint64(i) }

func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// decodeKV decodes a record key-value, checking that the key names the
// record's flow and flow_seq. Seq is set by assignSeqs.
func (l *Log) decodeKV(kv *mvccpb.KeyValue) (states.Record, error) {
	rest, ok := strings.CutPrefix(string(kv.Key), l.prefix+"r/")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return states.Record{}, fmt.Errorf("%w: record key %q", ErrCorrupt, kv.Key)
	}
	flow := rest[:i]
	flowSeq, err := strconv.ParseUint(rest[i+1:], 16, 64)
	if err != nil {
		return states.Record{}, fmt.Errorf("%w: record key %q", ErrCorrupt, kv.Key)
	}
	rec, err := states.Decode(kv.Value)
	if err != nil {
		return states.Record{}, &states.RecordError{Seq: seqOf(kv.ModRevision, 0), Flow: flow, FlowSeq: flowSeq, Err: err}
	}
	if rec.Flow != flow || rec.FlowSeq != flowSeq {
		return states.Record{}, &states.RecordError{Seq: seqOf(kv.ModRevision, 0), Flow: flow, FlowSeq: flowSeq,
			Err: fmt.Errorf("%w: the record names flow %s flow_seq %d", ErrCorrupt, states.ShortID(rec.Flow), rec.FlowSeq)}
	}
	return rec, nil
}

// seqd is a record with the revision it was written at.
type seqd struct {
	rec states.Record
	rev int64
}

// assignSeqs sets every record's Seq. The records of one append share a
// revision and a flow and have contiguous flow_seqs, so a record's index in
// its append is its flow_seq less the lowest flow_seq written at its
// revision. rs must hold whole appends.
func assignSeqs(rs []seqd) {
	low := map[int64]uint64{}
	for _, r := range rs {
		if m, ok := low[r.rev]; !ok || r.rec.FlowSeq < m {
			low[r.rev] = r.rec.FlowSeq
		}
	}
	for i := range rs {
		rs[i].rec.Seq = seqOf(rs[i].rev, int(rs[i].rec.FlowSeq-low[rs[i].rev]))
	}
}

// history decodes one flow's record key-values (in key order, so flow_seq
// order) into its history.
func (l *Log) history(flow string, kvs []*mvccpb.KeyValue) ([]states.Record, error) {
	rs := make([]seqd, 0, len(kvs))
	for _, kv := range kvs {
		rec, err := l.decodeKV(kv)
		if err != nil {
			return nil, err
		}
		if want := uint64(len(rs) + 1); rec.FlowSeq != want {
			return nil, &states.RecordError{Seq: seqOf(kv.ModRevision, 0), Flow: flow, FlowSeq: rec.FlowSeq, Err: fmt.Errorf("%w: flow_seq %d where %d was due", ErrCorrupt, rec.FlowSeq, want)}
		}
		rs = append(rs, seqd{rec: rec, rev: kv.ModRevision})
	}
	assignSeqs(rs)
	out := make([]states.Record, len(rs))
	for i, r := range rs {
		out[i] = r.rec
	}
	return out, nil
}

// History implements engine.Log.
func (l *Log) History(ctx context.Context, flow string) ([]states.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validFlow(flow) {
		return nil, nil
	}
	var resp *clientv3.GetResponse
	what := "history of flow " + states.ShortID(flow)
	err := l.call(ctx, what, func(ctx context.Context) (err error) {
		resp, err = l.cli.Get(ctx, l.recPrefix(flow), clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return nil, err
	}
	h, err := l.history(flow, resp.Kvs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return h, nil
}

// pageSize is how many keys one range request returns.
const pageSize = 512

// liveBatch is how many flows' histories one read transaction fetches: well
// under etcd's default cap of 128 operations per transaction.
const liveBatch = 64

// Live implements engine.Log. It pages through the live index, reads the
// histories in read-only transactions of liveBatch flows, and calls fn
// after every read, so fn may append. A flow that ended or was pruned
// between the index and its history is left out.
func (l *Log) Live(ctx context.Context, fn func(history []states.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var flows []string
	lp := l.prefix + "l/"
	err := l.pages(ctx, "read live flows", lp, clientv3.GetPrefixRangeEnd(lp), true, 0, func(kvs []*mvccpb.KeyValue, _ int64) error {
		for _, kv := range kvs {
			flows = append(flows, strings.TrimPrefix(string(kv.Key), lp))
		}
		return nil
	})
	if err != nil {
		return err
	}
	var all [][]states.Record
	for batch := range slices.Chunk(flows, liveBatch) {
		ops := make([]clientv3.Op, len(batch))
		for i, f := range batch {
			ops[i] = clientv3.OpGet(l.recPrefix(f), clientv3.WithPrefix())
		}
		var resp *clientv3.TxnResponse
		err := l.call(ctx, "read live flows", func(ctx context.Context) (err error) {
			resp, err = l.cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return err
		}
		for i, f := range batch {
			h, err := l.history(f, resp.Responses[i].GetResponseRange().GetKvs())
			if err != nil {
				return fmt.Errorf("read live flow %s: %w", states.ShortID(f), err)
			}
			if len(h) == 0 || h[len(h)-1].To.Terminal() {
				continue
			}
			all = append(all, h)
		}
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

// pages calls fn with the keys in [from, end) in key order, pageSize at a
// time, every page read at the revision of the first (rev, or the current
// one when rev is 0), so the pages are one consistent snapshot.
func (l *Log) pages(ctx context.Context, what, from, end string, keysOnly bool, rev int64, fn func(kvs []*mvccpb.KeyValue, rev int64) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		var resp *clientv3.GetResponse
		err := l.call(ctx, what, func(ctx context.Context) (err error) {
			resp, err = l.cli.Get(ctx, from, opts...)
			return err
		})
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if err := fn(resp.Kvs, rev); err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Scan implements engine.Log. It reads every record key at one revision,
// keeps those written at or after the revision of after, sorts them by Seq
// in memory and then calls fn: it costs a pass over the whole log and
// memory for the records it returns. A record appended during a scan is
// not seen; no record is seen twice.
func (l *Log) Scan(ctx context.Context, after uint64, fn func(states.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	minRev := int64(after / seqPerRev)
	var rs []seqd
	rp := l.prefix + "r/"
	var bad error
	read := func() error {
		rs, bad = rs[:0], nil
		return l.pages(ctx, "scan the log", rp, clientv3.GetPrefixRangeEnd(rp), false, 0, func(kvs []*mvccpb.KeyValue, _ int64) error {
			for _, kv := range kvs {
				if kv.ModRevision < minRev {
					continue
				}
				rec, err := l.decodeKV(kv)
				if err != nil {
					// fn sees every good record before the bad one first.
					if bad == nil {
						bad = err
					}
					continue
				}
				rs = append(rs, seqd{rec: rec, rev: kv.ModRevision})
			}
			return nil
		})
	}
	err := read()
	for attempt := 0; errors.Is(err, rpctypes.ErrCompacted) && attempt < 3; attempt++ {
		// The snapshot's revision was compacted away between two pages:
		// read again at a newer one.
		err = read()
	}
	if err != nil {
		return err
	}
	assignSeqs(rs)
	slices.SortFunc(rs, func(a, b seqd) int {
		switch {
		case a.rec.Seq < b.rec.Seq:
			return -1
		case a.rec.Seq > b.rec.Seq:
			return 1
		}
		return 0
	})
	for _, r := range rs {
		if r.rec.Seq <= after {
			continue
		}
		if err := fn(r.rec); err != nil {
			return err
		}
	}
	if bad != nil {
		return fmt.Errorf("scan the log: %w", bad)
	}
	return nil
}

// Secret implements engine.Log.
func (l *Log) Secret(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if key == "" {
		return nil, false, nil
	}
	var resp *clientv3.GetResponse
	err := l.call(ctx, fmt.Sprintf("read secret %q", key), func(ctx context.Context) (err error) {
		resp, err = l.cli.Get(ctx, l.secretKey(key))
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	v, err := l.sealer.Open(key, resp.Kvs[0].Value)
	if err != nil {
		return nil, false, fmt.Errorf("read secret from etcd: %w", err)
	}
	return v, true, nil
}

// pruneBatch is how many flows one Prune transaction deletes.
const pruneBatch = 32

// Prune implements engine.Log. It walks the ended index from the oldest
// end up to endedBefore and deletes pruneBatch flows per transaction, each
// under its own comparison that the flow is not live. Replicas may prune
// at once: a flow is counted by the one whose transaction deleted it. If
// ctx ends between two transactions, Prune returns what it pruned so far
// with ctx's error.
func (l *Log) Prune(ctx context.Context, endedBefore time.Time) (int, error) {
	return l.PruneKeeping(ctx, endedBefore, nil)
}

// PruneKeeping implements engine.KeepingPruner: Prune, sparing the flows
// keep (nil: none) names.
func (l *Log) PruneKeeping(ctx context.Context, endedBefore time.Time, keep func(flow string) bool) (int, error) {
	np := l.prefix + "n/"
	var ended []string
	err := l.pages(ctx, "prune: read the ended index", np, l.endedTimeKey(endedBefore), true, 0, func(kvs []*mvccpb.KeyValue, _ int64) error {
		for _, kv := range kvs {
			k := string(kv.Key)
			if keep != nil && len(k) > len(np)+24+1 && keep(k[len(np)+24+1:]) {
				continue
			}
			ended = append(ended, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(ended) == 0 {
		return 0, nil
	}
	total := 0
	for batch := range slices.Chunk(ended, pruneBatch) {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		ops := make([]clientv3.Op, 0, len(batch))
		for _, nkey := range batch {
			// n/<24 hex digits>/<flow>
			if len(nkey) <= len(np)+24+1 || !validFlow(nkey[len(np)+24+1:]) {
				return total, fmt.Errorf("prune: %w: ended index key %q", ErrCorrupt, nkey)
			}
			flow := nkey[len(np)+24+1:]
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.liveKey(flow)), "=", 0)},
				[]clientv3.Op{
					clientv3.OpDelete(l.headKey(flow)),
					clientv3.OpDelete(l.recPrefix(flow), clientv3.WithPrefix()),
					clientv3.OpDelete(l.endedMark(flow)),
					clientv3.OpDelete(nkey),
				}, nil))
		}
		var resp *clientv3.TxnResponse
		err := l.call(ctx, "prune", func(ctx context.Context) (err error) {
			resp, err = l.cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return total, err
		}
		for _, r := range resp.Responses {
			t := r.GetResponseTxn()
			if t.GetSucceeded() && t.Responses[0].GetResponseDeleteRange().GetDeleted() > 0 {
				total++
			}
		}
	}
	return total, nil
}
