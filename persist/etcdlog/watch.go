package etcdlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/states"
)

// ErrWatchLost: a watch cannot resume where it stopped, because etcd
// compacted the revisions in between. The watcher re-reads the live flows
// (Live) from a fresh Head and watches again.
var ErrWatchLost = errors.New("watch of the etcd log lost its place")

// Head returns a Seq at or above that of every record committed so far,
// by any replica: Watch(ctx, Head, fn) then misses nothing committed after
// a Live or History read that began after Head returned.
func (l *Log) Head(ctx context.Context) (uint64, error) {
	var resp *clientv3.GetResponse
	err := l.call(ctx, "read the log's head", func(ctx context.Context) (err error) {
		resp, err = l.cli.Get(ctx, l.prefix+"meta/format", clientv3.WithCountOnly())
		return err
	})
	if err != nil {
		return 0, err
	}
	return seqOf(resp.Header.Revision, seqPerRev-1), nil
}

// Watch calls fn with the records of every append committed with a Seq
// greater than after, by this or any other replica, one append per call in
// Seq order, until ctx ends (it then returns ctx's error). It rides out
// member failures and reconnects by resuming from the last revision it
// delivered, so no append is skipped or delivered twice; when it cannot
// resume because etcd compacted that revision away, it returns an error
// wrapping ErrWatchLost. fn runs on the watch's goroutine: a slow fn
// delays later appends, never loses them.
func (l *Log) Watch(ctx context.Context, after uint64, fn func(recs []states.Record)) error {
	rev := int64(after/seqPerRev) + 1
	if after%seqPerRev != seqPerRev-1 {
		// after is inside an append: watch from that revision and skip
		// the records up to after.
		rev--
	}
	rp := l.prefix + "r/"
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		wc := l.cli.Watch(clientv3.WithRequireLeader(wctx), rp, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterDelete())
		for resp := range wc {
			if resp.CompactRevision != 0 {
				return fmt.Errorf("watch etcd log from revision %d: %w: compacted up to %d", rev, ErrWatchLost, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return fmt.Errorf("watch etcd log from revision %d: %w: %v", rev, ErrWatchLost, err)
				}
				// No leader or a broken stream: the channel closes and the
				// loop below watches again from rev.
				continue
			}
			for _, group := range byRevision(resp.Events) {
				recs, err := l.appendOf(group)
				if err != nil {
					return fmt.Errorf("watch etcd log: %w", err)
				}
				kept := recs[:0]
				for _, r := range recs {
					if r.Seq > after {
						kept = append(kept, r)
					}
				}
				rev = group[0].Kv.ModRevision + 1
				if len(kept) > 0 {
					fn(kept)
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// The channel closed without ctx ending: the member lost its
		// leader (WithRequireLeader) or the client gave up on the stream.
		// Watch again from the next revision not yet delivered, after a
		// pause so a cluster without quorum is not asked in a tight loop;
		// the client picks a member that serves.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rewatchPause):
		}
	}
}

// rewatchPause is how long Watch waits before watching again after its
// stream ended (no leader, member gone).
const rewatchPause = 100 * time.Millisecond

// byRevision splits a watch response's events into appends: the events
// of one revision, in order.
func byRevision(evs []*clientv3.Event) [][]*clientv3.Event {
	var out [][]*clientv3.Event
	for _, ev := range evs {
		if ev.Type != mvccpb.PUT {
			continue
		}
		if n := len(out); n > 0 && out[n-1][0].Kv.ModRevision == ev.Kv.ModRevision {
			out[n-1] = append(out[n-1], ev)
			continue
		}
		out = append(out, []*clientv3.Event{ev})
	}
	return out
}

// appendOf decodes one append's record events, sorted by flow_seq, with
// their Seq.
func (l *Log) appendOf(evs []*clientv3.Event) ([]states.Record, error) {
	rs := make([]seqd, 0, len(evs))
	for _, ev := range evs {
		rec, err := l.decodeKV(ev.Kv)
		if err != nil {
			return nil, err
		}
		rs = append(rs, seqd{rec: rec, rev: ev.Kv.ModRevision})
	}
	slices.SortFunc(rs, func(a, b seqd) int { return cmp.Compare(a.rec.FlowSeq, b.rec.FlowSeq) })
	assignSeqs(rs)
	out := make([]states.Record, len(rs))
	for i, r := range rs {
		out[i] = r.rec
	}
	return out, nil
}
