package gcfloor_test

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"flowd.local/flowd/cmd/internal/gcfloor"
)

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gcCycles allocates mib MiB of short-lived garbage, in 32 KiB pieces like
// a connect's, and returns how many collections ran meanwhile.
func gcCycles(mib int) uint64 {
	runtime.GC()
	before := read("/gc/cycles/total:gc-cycles")
	var keep []byte
	for range mib * 32 {
		keep = make([]byte, 32<<10)
		keep[0] = 1
	}
	runtime.KeepAlive(keep)
	return read("/gc/cycles/total:gc-cycles") - before
}

// With a small live heap, the floor makes the collector run several times
// less often for the same garbage; removed, Go's default is back.
func TestFloorCutsCollectionsOfASmallHeap(t *testing.T) {
	t.Setenv("GOGC", "") // the floor stands aside when GOGC is set
	gogc := read("/gc/gogc:percent")
	without := gcCycles(256)
	remove, ok := gcfloor.Install(64 << 20)
	require.True(t, ok)
	with := gcCycles(256)
	remove()
	after := gcCycles(256)
	t.Logf("collections for 256 MiB of garbage: %d with Go's default, %d with a 64 MiB floor, %d after removing it", without, with, after)
	assert.Less(t, with*4, without, "a 64 MiB floor collects at most a quarter as often as a 4 MiB goal")
	assert.Greater(t, after*4, without, "removing the floor restores the default: more than a quarter as many collections again")
	assert.Equal(t, gogc, read("/gc/gogc:percent"), "removing the floor restores GOGC")
}

// Once the live heap is above half the floor, GOGC is 100 again: the
// floor never lets a large heap grow past twice what is live.
func TestFloorStandsAsideForALargeHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	remove, ok := gcfloor.Install(16 << 20)
	require.True(t, ok)
	defer remove()
	live := make([]*[1 << 20]byte, 48) // 48 MiB live
	for i := range live {
		live[i] = new([1 << 20]byte)
	}
	runtime.GC()
	runtime.GC() // the floor adjusts after a collection, in the background
	assert.Eventually(t, func() bool { return read("/gc/gogc:percent") == 100 }, 5e9, 1e6)
	runtime.KeepAlive(live)
	live = nil
	runtime.GC()
	assert.Eventually(t, func() bool { return read("/gc/gogc:percent") > 100 }, 5e9, 1e6, "with the heap small again the floor is back")
}

// An operator who sets GOGC keeps it: the floor installs nothing.
func TestFloorLeavesAnExplicitGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	gogc := read("/gc/gogc:percent")
	remove, ok := gcfloor.Install(64 << 20)
	defer remove()
	assert.False(t, ok)
	runtime.GC()
	assert.Equal(t, gogc, read("/gc/gogc:percent"), "GOGC is left as it was")
}
