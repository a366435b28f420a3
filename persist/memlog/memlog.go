// Package memlog is an in-memory event log. It passes the same contract
// suite as the bbolt log (engine/logtest) and serves tests and benchmarks
// that want the engine without a disk: the price of durability is the
// difference between the two.
//
// Nothing in it survives the process. Secrets are kept in plain memory.
//
// It behaves like the bbolt log on a done context: every method then
// returns the context's error and reads or writes nothing, so a test that
// passes on memlog does not fail on the real log for that. It fails with
// the engine's storage error classes as the durable logs do: Close makes
// every later call fail with engine.ErrLogUnavailable, and Fail makes it
// fail as a backend in trouble would (a full disk, a lost quorum), so an
// embedder's tests can cover those paths without a disk or a cluster.
package memlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Log is an in-memory event log. The zero value is not usable; call New.
type Log struct {
	mu      sync.RWMutex
	seq     uint64
	records []states.Record      // global order, without pruned records
	flows   map[string][]int     // flow -> indexes into records
	ended   map[string]time.Time // terminal flows -> time of their terminal record
	secrets map[string][]byte

	closed atomic.Bool
	fault  atomic.Pointer[error]
}

// Close closes the log: every later call fails with an error wrapping
// engine.ErrLogUnavailable, as a closed bbolt or etcd log's do.
func (l *Log) Close() error {
	l.closed.Store(true)
	return nil
}

// Fail makes every later call fail with an error wrapping err, as a
// backend in trouble would, until Fail(nil). An err wrapping
// engine.ErrStorageFull fails writes (Append, Prune) only, as a full disk
// does; any other err, such as engine.ErrLogUnavailable, fails reads too.
// A call that fails writes nothing.
func (l *Log) Fail(err error) {
	if err == nil {
		l.fault.Store(nil)
		return
	}
	l.fault.Store(&err)
}

// refuse returns the error a call must fail with before it reads or
// writes anything, or nil.
func (l *Log) refuse(ctx context.Context, op string, write bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.closed.Load() {
		return fmt.Errorf("memlog: %s: %w: the log is closed", op, engine.ErrLogUnavailable)
	}
	if p := l.fault.Load(); p != nil && (write || !errors.Is(*p, engine.ErrStorageFull)) {
		return fmt.Errorf("memlog: %s: %w", op, *p)
	}
	return nil
}

// New returns an empty log.
func New() *Log {
	return &Log{flows: map[string][]int{}, ended: map[string]time.Time{}, secrets: map[string][]byte{}}
}

// Append implements engine.Log.
func (l *Log) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	if err := l.refuse(ctx, "append", true); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(recs) > 0 {
		flow := recs[0].Flow
		last := uint64(len(l.flows[flow]))
		for i, r := range recs {
			if r.Flow != flow {
				return fmt.Errorf("memlog: append: records of flows %s and %s in one append: %w", states.ShortID(flow), states.ShortID(r.Flow), engine.ErrConflict)
			}
			if r.FlowSeq != last+1+uint64(i) {
				return fmt.Errorf("memlog: append flow %s: flow_seq %d does not follow %d: %w", states.ShortID(flow), r.FlowSeq, last+uint64(i), engine.ErrConflict)
			}
		}
		for i := range recs {
			l.seq++
			recs[i].Seq = l.seq
			if recs[i].Version == 0 {
				recs[i].Version = states.SchemaVersion
			}
			l.flows[flow] = append(l.flows[flow], len(l.records))
			l.records = append(l.records, cloneRecord(recs[i]))
			if _, done := l.ended[flow]; !done && recs[i].To.Terminal() {
				l.ended[flow] = recs[i].Time
			}
		}
	}
	for k, v := range secrets {
		if v == nil {
			delete(l.secrets, k)
		} else {
			l.secrets[k] = slices.Clone(v)
		}
	}
	return nil
}

// History implements engine.Log.
func (l *Log) History(ctx context.Context, flow string) ([]states.Record, error) {
	if err := l.refuse(ctx, "history", false); err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	idx := l.flows[flow]
	out := make([]states.Record, 0, len(idx))
	for _, i := range idx {
		out = append(out, cloneRecord(l.records[i]))
	}
	return out, nil
}

// Live implements engine.Log.
func (l *Log) Live(ctx context.Context, fn func([]states.Record) error) error {
	if err := l.refuse(ctx, "live", false); err != nil {
		return err
	}
	l.mu.RLock()
	var live []string
	for flow, idx := range l.flows {
		if len(idx) > 0 && !l.records[idx[len(idx)-1]].To.Terminal() {
			live = append(live, flow)
		}
	}
	l.mu.RUnlock()
	sort.Strings(live)
	for _, flow := range live {
		h, err := l.History(ctx, flow)
		if err != nil {
			return err
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

// Scan implements engine.Log.
func (l *Log) Scan(ctx context.Context, after uint64, fn func(states.Record) error) error {
	if err := l.refuse(ctx, "scan", false); err != nil {
		return err
	}
	l.mu.RLock()
	recs := make([]states.Record, 0, len(l.records))
	for _, r := range l.records {
		if r.Seq > after {
			recs = append(recs, cloneRecord(r))
		}
	}
	l.mu.RUnlock()
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// Secret implements engine.Log.
func (l *Log) Secret(ctx context.Context, key string) ([]byte, bool, error) {
	if err := l.refuse(ctx, "secret", false); err != nil {
		return nil, false, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	v, ok := l.secrets[key]
	return slices.Clone(v), ok, nil
}

// Prune implements engine.Log. It drops the pruned records from memory, so
// a long-running test or benchmark that prunes does not grow without bound.
func (l *Log) Prune(ctx context.Context, endedBefore time.Time) (int, error) {
	return l.PruneKeeping(ctx, endedBefore, nil)
}

// PruneKeeping implements engine.KeepingPruner: Prune, sparing the flows
// keep (nil: none) names.
func (l *Log) PruneKeeping(ctx context.Context, endedBefore time.Time, keep func(flow string) bool) (int, error) {
	if err := l.refuse(ctx, "prune", true); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for flow, at := range l.ended {
		if !at.Before(endedBefore) || keep != nil && keep(flow) {
			continue
		}
		// A flow whose last record is non-terminal is live, whatever an
		// earlier record said: live flows are never pruned.
		if idx := l.flows[flow]; len(idx) > 0 && !l.records[idx[len(idx)-1]].To.Terminal() {
			continue
		}
		delete(l.flows, flow)
		delete(l.ended, flow)
		n++
	}
	if n == 0 {
		return 0, nil
	}
	kept := l.records[:0]
	for _, r := range l.records {
		if _, ok := l.flows[r.Flow]; ok {
			kept = append(kept, r)
		}
	}
	clear(l.records[len(kept):])
	l.records = kept
	for flow := range l.flows {
		l.flows[flow] = l.flows[flow][:0]
	}
	for i, r := range l.records {
		l.flows[r.Flow] = append(l.flows[r.Flow], i)
	}
	return n, nil
}

func cloneRecord(r states.Record) states.Record {
	r.Data.Scopes = slices.Clone(r.Data.Scopes)
	r.Data.GrantedScopes = slices.Clone(r.Data.GrantedScopes)
	if r.Data.Deadline != nil {
		d := *r.Data.Deadline
		r.Data.Deadline = &d
	}
	return r
}
