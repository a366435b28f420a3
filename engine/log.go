package engine

import (
	"context"
	"errors"
	"time"

	"github.com/flowdhq/flowd/states"
)

// Log is the durable event log the engine runs on. The engine sees storage
// only through this interface; persist.DB (bbolt) and memlog.Log implement
// it, and engine/logtest holds the contract suite every implementation must
// pass.
//
// A failing method's error wraps one of the storage error classes below
// when one fits (ErrConflict, ErrLogUnavailable, ErrStorageFull), the
// backend's own error still wrapped beside it, so callers act on the class
// without knowing the backend.
//
// Every method called with a done ctx returns ctx's error (errors.Is
// matches it) and neither reads nor writes: an implementation must not
// answer reads from memory when a durable one would refuse them.
//
// The interface is shaped for a distributed store too: an append is a
// compare-and-set on the flow's last sequence, so two writers can never both
// advance one flow.
type Log interface {
	// Append atomically and durably appends recs and applies secrets.
	//
	// recs all belong to one flow and have contiguous FlowSeq values, the
	// first one more than the flow's last FlowSeq (0 for a new flow).
	// Otherwise Append writes nothing and returns an error wrapping
	// ErrConflict. Append assigns each record's Seq, strictly
	// increasing across the whole log, in place.
	//
	// secrets maps a key to a plaintext the log stores sealed (encrypted at
	// rest), or to nil to delete it. recs may be empty to write only secrets.
	//
	// Append returns only once the write is durable. Concurrent calls may
	// share one commit. If ctx is done before the write begins, Append
	// returns ctx.Err() and writes nothing.
	Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error

	// History returns a flow's records in FlowSeq order; none for an unknown flow.
	History(ctx context.Context, flow string) ([]states.Record, error)

	// Live calls fn with the history of every flow whose last record leads
	// to a non-terminal state. Its cost grows with live flows, not with the
	// log's length. fn's error stops the walk and is returned.
	Live(ctx context.Context, fn func(history []states.Record) error) error

	// Scan calls fn for every record with Seq greater than after, in Seq
	// order. fn's error stops the scan and is returned.
	Scan(ctx context.Context, after uint64, fn func(states.Record) error) error

	// Secret returns a sealed secret's plaintext, and false if there is none.
	Secret(ctx context.Context, key string) ([]byte, bool, error)

	// Prune deletes every record of the flows that became terminal before
	// endedBefore, and returns how many flows it deleted. Live flows are
	// never pruned.
	Prune(ctx context.Context, endedBefore time.Time) (int, error)
}

// The storage error classes. Every Log wraps its failures into the one
// that fits, so the engine and a server classify errors by these alone.
// They say what happened, not what a user should do: that advice belongs
// to the program showing the error.
var (
	// ErrConflict: an append did not continue the flow's last FlowSeq
	// (another writer advanced the flow first, or the records do not
	// follow one another). Nothing was written; re-read the flow.
	ErrConflict = errors.New("flow sequence conflict")
	// ErrLogUnavailable: the log cannot serve the call now: its backend is
	// unreachable or has lost quorum, or the log was closed. Retrying
	// later may succeed. A write that failed this way may still have been
	// applied by a distributed backend; re-read before acting on it.
	ErrLogUnavailable = errors.New("event log unavailable")
	// ErrStorageFull: the backend refused a write for want of space (a
	// full disk, ENOSPC; a store's space quota, such as etcd's NOSPACE
	// alarm). Nothing was written; free space and retry.
	ErrStorageFull = errors.New("event log storage full")
)

// Watcher is implemented by a Log that several engines share at once, as
// flowd replicas in cluster mode share the etcd log. An engine on such a
// log holds every live flow, not only those it started: it adopts the
// flows the others start and applies the transitions they record (which
// wakes its waiters), it loads a flow a callback names that it has not
// seen yet, and every engine arms every live flow's deadline. When two
// engines act on one flow at once, Append's compare-and-set lets one
// through; the other re-reads the flow and acts on what it became.
type Watcher interface {
	// Head returns a Seq at or above that of every record appended so
	// far, by any writer.
	Head(ctx context.Context) (uint64, error)

	// Watch calls fn with the records of every append with a Seq greater
	// than after, by this writer or any other, one append per call in Seq
	// order, until ctx ends (it returns ctx's error) or it cannot go on
	// without a gap (it returns another error, and the engine reads the
	// live flows again from a new Head). fn must not call Watch.
	Watch(ctx context.Context, after uint64, fn func(recs []states.Record)) error
}

// Claimer is implemented by a shared Log (a Watcher) that grants
// exclusive claims which lapse when their holder stops: leases. The engine
// claims a device flow before each poll of the token endpoint, so that one
// engine polls it (two would poll faster than the interval RFC 8628 §3.5
// allows, and the second would spend the device code's one success), and
// another engine, or the same one restarted, takes the polling over once
// the claim lapses. On a shared Log without Claimer a device flow is
// polled only by the engine that started it, and by none after it stops.
type Claimer interface {
	// Claim takes the claim named key for this writer (this Log value)
	// unless another writer holds it, and reports whether this writer
	// holds it now: true when it was free or is already this writer's.
	// A claim lapses when its holder's Log is closed, or within the Log's
	// lease period after its process died or lost the store.
	Claim(ctx context.Context, key string) (bool, error)
	// Release gives up this writer's claim on key, so that another writer
	// can take it at once. Releasing a claim this writer does not hold
	// does nothing.
	Release(ctx context.Context, key string) error
}

// KeepingPruner is implemented by a Log whose Prune can spare flows: the
// engine keeps the flow of every connection that still holds its token,
// so its token events go on being recorded and Connections goes on
// listing it after the retention period. Every Log of this module
// implements it; on a Log that does not, connections older than the
// retention period are pruned with their flows.
type KeepingPruner interface {
	// PruneKeeping is Prune, sparing every flow for which keep is true.
	PruneKeeping(ctx context.Context, endedBefore time.Time, keep func(flow string) bool) (int, error)
}
