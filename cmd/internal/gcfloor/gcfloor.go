// Package gcfloor gives the Go garbage collector a minimum heap goal, the
// way flowd runs it.
//
// Go collects when the heap reaches twice what the last collection left
// live (GOGC=100), and at least 4 MiB. flowd's live heap is small (a few
// MiB, plus about 1.2 KiB per live flow) while every connect allocates
// about 30 KiB (the OAuth library's request and response, bbolt's B-tree
// nodes, records): under load the collector ran about 250-300 times a second
// and, with its assists and the scavenger returning pages it soon faulted
// back, took about a fifth of the CPU, much of it on the log's group commit,
// which every append waits for (docs/bench.md has the measurements).
//
// A floor lets the heap grow to the floor before a collection while the
// live heap is small, and changes nothing once the live heap is above half
// of it: the heap stays within max(floor, 2 x live), as with GOGC=100 for
// large heaps.
//
// Caveats: the floor is kept by setting GOGC (debug.SetGCPercent) after
// every collection, so it owns that setting. Install does nothing when the
// GOGC environment variable is set, which is how an operator takes the
// setting back, and nothing else in the process may call SetGCPercent
// while it is installed. A memory limit (GOMEMLIMIT) still applies.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Default is flowd's floor. Measured with the engine benchmark (64
// connects in flight, a live heap of about 2 MiB): durable transitions
// rose with the heap goal up to 16 MiB (+12-20% over Go's 4 MiB) and
// stayed flat up to 64 MiB.
const Default = 16 << 20

// runtimeMinimum is the runtime's minimum heap goal at GOGC=100, which it
// scales with GOGC: a GOGC of 400 alone makes the minimum 16 MiB. So the
// floor never sets more than floor/runtimeMinimum x 100, or a nearly empty
// heap would get a goal far above the floor.
const runtimeMinimum = 4 << 20

var (
	mu      sync.Mutex
	current *floor
)

type floor struct {
	bytes    uint64
	previous int
	percent  int // the GOGC last set
	removed  bool
}

// sentinel is garbage from birth: its cleanup runs after the next
// collection. It holds a pointer so the tiny allocator does not batch it
// with other objects, which would delay its collection.
type sentinel struct{ _ *byte }

// Install keeps the heap goal at or above bytes until remove is called,
// which restores the GOGC in force before. It installs nothing (ok is false
// and remove does nothing) when the GOGC environment variable is set, when
// bytes is 0, or when a floor is already installed.
func Install(bytes uint64) (remove func(), ok bool) {
	if bytes == 0 || os.Getenv("GOGC") != "" {
		return func() {}, false
	}
	mu.Lock()
	defer mu.Unlock()
	if current != nil {
		return func() {}, false
	}
	f := &floor{bytes: bytes, previous: debug.SetGCPercent(100)}
	debug.SetGCPercent(f.previous)
	f.percent = f.previous
	current = f
	f.adjustLocked()
	f.arm()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if f.removed {
			return
		}
		f.removed = true
		current = nil
		debug.SetGCPercent(f.previous)
	}, true
}

// arm asks to be called after the next collection.
func (f *floor) arm() {
	runtime.AddCleanup(&sentinel{}, collected, f)
}

// collected runs after every collection while f is installed.
func collected(f *floor) {
	mu.Lock()
	defer mu.Unlock()
	if f.removed {
		return
	}
	f.adjustLocked()
	f.arm()
}

// liveSample reads what the last collection left live.
var liveSample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

// adjustLocked sets GOGC so the next heap goal is about the floor, or 100
// once twice the live heap is above the floor.
func (f *floor) adjustLocked() {
	metrics.Read(liveSample)
	live := uint64(0)
	if liveSample[0].Value.Kind() == metrics.KindUint64 {
		live = liveSample[0].Value.Uint64()
	}
	most := f.bytes * 100 / runtimeMinimum
	percent := uint64(100)
	switch {
	case live == 0:
		percent = most
	case f.bytes > 2*live:
		percent = min(f.bytes*100/live-100, most)
	}
	if p := int(max(percent, 100)); p != f.percent {
		debug.SetGCPercent(p)
		f.percent = p
	}
}
