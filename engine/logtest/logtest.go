// Package logtest is the contract suite every engine.Log implementation
// must pass. It checks what engine.Log's doc comments promise and nothing
// more: sequence assignment, conflicts that write nothing, history and scan
// order, the live set, sealed secrets, pruning, concurrency, cancellation,
// and, for a durable log, that all of it survives a close and reopen.
//
// Use it from the implementation's tests:
//
//	func TestContract(t *testing.T) {
//		logtest.Run(t, func(t *testing.T) engine.Log { return memlog.New() })
//	}
//
// A durable log passes WithReopen so the suite can close it and open the
// same storage again. A log whose failures can be injected passes
// WithFaults, and the suite checks that each failure comes out in its
// storage error class (engine.ErrStorageFull, engine.ErrLogUnavailable)
// and writes nothing. A log with a Close method is checked to fail with
// engine.ErrLogUnavailable once closed.
package logtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Open returns a new, empty log for one test. It registers whatever
// cleanup the log needs (closing it, removing its files) with t.Cleanup.
type Open func(t *testing.T) engine.Log

// Reopen closes l and returns a new log on the same storage, as a restart
// would. It registers the new log's cleanup with t.Cleanup; cleanup must
// tolerate l having been closed here.
type Reopen func(t *testing.T, l engine.Log) engine.Log

// Option configures Run.
type Option func(*suite)

// WithReopen declares the log durable and runs the durability tests with
// reopen.
func WithReopen(reopen Reopen) Option { return func(s *suite) { s.reopen = reopen } }

// Faults injects a backend's failures. Each function makes l fail that
// way and returns a function that heals it; a nil function skips its test.
type Faults struct {
	// Full makes l's storage refuse writes for want of space (a full
	// disk, a store's quota).
	Full func(t *testing.T, l engine.Log) (heal func())
	// Unavailable makes l's backend unreachable (members down, no quorum).
	Unavailable func(t *testing.T, l engine.Log) (heal func())
}

// WithFaults runs the failure-class tests with faults.
func WithFaults(faults Faults) Option { return func(s *suite) { s.faults = faults } }

type suite struct {
	open   Open
	reopen Reopen
	faults Faults
}

// Run runs the contract suite, each test on a fresh log from open.
func Run(t *testing.T, open Open, opts ...Option) {
	s := &suite{open: open}
	for _, o := range opts {
		o(s)
	}
	tests := []struct {
		name string
		fn   func(*testing.T, engine.Log)
	}{
		{"AppendAssignsIncreasingSeqInPlace", testAppendSeq},
		{"AppendNothing", testAppendNothing},
		{"ConflictWrongFirstFlowSeq", testConflictFirst},
		{"ConflictGapInsideRecords", testConflictGap},
		{"ConflictMixedFlows", testConflictMixed},
		{"HistoryInFlowSeqOrder", testHistory},
		{"HistoryUnknownFlow", testHistoryUnknown},
		{"LiveIsExactlyNonTerminalFlows", testLive},
		{"LiveStopsOnFnError", testLiveFnError},
		{"ScanInSeqOrderAfter", testScan},
		{"ScanStopsOnFnError", testScanFnError},
		{"Secrets", testSecrets},
		{"SecretsAtomicWithRecords", testSecretsAtomic},
		{"Prune", testPrune},
		{"PruneKeepsSeqIncreasing", testPruneSeq},
		{"PruneKeepingSparesNamedFlows", testPruneKeeping},
		{"ConcurrentAppendsDistinctFlows", testConcurrentDistinct},
		{"ConcurrentAppendsSameFlow", testConcurrentSame},
		{"CancelledContextWritesNothing", testCancelled},
		{"DoneContextFailsEveryMethod", testDoneContextEveryMethod},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, s.open(t)) })
	}
	t.Run("Durable", func(t *testing.T) {
		if s.reopen == nil {
			t.Skip("the log is not durable (Run was given no WithReopen)")
		}
		t.Run("ReopenKeepsEverything", func(t *testing.T) { testReopen(t, s.open(t), s.reopen) })
		t.Run("ReopenKeepsPrune", func(t *testing.T) { testReopenPrune(t, s.open(t), s.reopen) })
	})
	t.Run("Failures", func(t *testing.T) {
		t.Run("ClosedIsUnavailable", func(t *testing.T) { testClosed(t, s.open(t)) })
		t.Run("StorageFullWritesNothing", func(t *testing.T) {
			if s.faults.Full == nil {
				t.Skip("no way to fill this log's storage (Run was given no Faults.Full)")
			}
			testFull(t, s.open(t), s.faults.Full)
		})
		t.Run("UnavailableFailsEveryMethod", func(t *testing.T) {
			if s.faults.Unavailable == nil {
				t.Skip("no way to make this log's backend unreachable (Run was given no Faults.Unavailable)")
			}
			testUnavailable(t, s.open(t), s.faults.Unavailable)
		})
	})
}

var bg = context.Background()

// mustAppend appends recs (and secrets) and fails the test on error.
func mustAppend(t *testing.T, l engine.Log, secrets map[string][]byte, recs ...states.Record) []states.Record {
	t.Helper()
	require.NoError(t, l.Append(bg, recs, secrets), "append %d records", len(recs))
	return recs
}

func history(t *testing.T, l engine.Log, flow string) []states.Record {
	t.Helper()
	h, err := l.History(bg, flow)
	require.NoError(t, err, "history of %s", flow)
	return h
}

func scanAll(t *testing.T, l engine.Log, after uint64) []states.Record {
	t.Helper()
	var out []states.Record
	require.NoError(t, l.Scan(bg, after, func(r states.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

func live(t *testing.T, l engine.Log) map[string][]states.Record {
	t.Helper()
	out := map[string][]states.Record{}
	require.NoError(t, l.Live(bg, func(h []states.Record) error {
		require.NotEmpty(t, h, "Live passed an empty history")
		_, dup := out[h[0].Flow]
		assert.False(t, dup, "Live passed flow %s twice", h[0].Flow)
		out[h[0].Flow] = slices.Clone(h)
		return nil
	}))
	return out
}

func secret(t *testing.T, l engine.Log, key string) ([]byte, bool) {
	t.Helper()
	v, ok, err := l.Secret(bg, key)
	require.NoError(t, err, "secret %q", key)
	return v, ok
}

func seqs(recs []states.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func requireConflict(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, "%s must be refused", what)
	require.ErrorIs(t, err, engine.ErrConflict, "%s: the error must wrap engine.ErrConflict", what)
}

func testAppendSeq(t *testing.T, l engine.Log) {
	a, b := NewFlow(Base), NewFlow(Base)
	first := mustAppend(t, l, nil, a.Created())
	require.NotZero(t, first[0].Seq, "Append must assign Seq in place")
	batch := mustAppend(t, l, nil, b.Created(), b.URLIssued())
	more := mustAppend(t, l, nil, a.URLIssued(), a.ExchangeStarted(), a.Succeeded())

	all := append(append(slices.Clone(first), batch...), more...)
	for i := 1; i < len(all); i++ {
		assert.Greater(t, all[i].Seq, all[i-1].Seq, "Seq must strictly increase across appends and within one")
	}
	assert.Equal(t, append(first, more...), history(t, l, a.ID), "History returns what was appended, with its Seq")
	assert.Equal(t, batch, history(t, l, b.ID))
	assert.Equal(t, all, scanAll(t, l, 0))
}

func testAppendNothing(t *testing.T, l engine.Log) {
	require.NoError(t, l.Append(bg, nil, nil), "an empty append is not an error")
	require.NoError(t, l.Append(bg, []states.Record{}, map[string][]byte{}))
	assert.Empty(t, scanAll(t, l, 0))

	require.NoError(t, l.Append(bg, nil, map[string][]byte{"verifier/x": []byte("only a secret")}), "recs may be empty to write only secrets")
	v, ok := secret(t, l, "verifier/x")
	assert.True(t, ok)
	assert.Equal(t, []byte("only a secret"), v)
	assert.Empty(t, scanAll(t, l, 0), "a secrets-only append writes no record")
}

// assertUnchanged checks that a refused append left the log as before.
func assertUnchanged(t *testing.T, l engine.Log, before []states.Record) {
	t.Helper()
	assert.Equal(t, before, scanAll(t, l, 0), "a refused append must write no record")
}

func testConflictFirst(t *testing.T, l engine.Log) {
	f := NewFlow(Base)
	created := mustAppend(t, l, nil, f.Created())
	mustAppend(t, l, map[string][]byte{"keep": []byte("kept")})
	before := scanAll(t, l, 0)
	secrets := map[string][]byte{"verifier/" + f.ID: []byte("must-not-land"), "keep": nil}

	// A new flow must start at FlowSeq 1.
	g := NewFlow(Base)
	g.Created()
	requireConflict(t, l.Append(bg, []states.Record{g.URLIssued()}, secrets), "a new flow starting at flow_seq 2")

	// An existing flow must continue at last+1: not again at 1 ...
	again := NewFlow(Base)
	again.ID = f.ID
	requireConflict(t, l.Append(bg, []states.Record{again.Created()}, secrets), "flow_seq 1 again")

	// ... and not skip ahead.
	skip := *f
	skip.URLIssued()
	requireConflict(t, l.Append(bg, []states.Record{skip.ExchangeStarted()}, secrets), "flow_seq 3 after 1")

	// FlowSeq 0 continues nothing.
	zero := f.URLIssued()
	zero.FlowSeq = 0
	requireConflict(t, l.Append(bg, []states.Record{zero}, secrets), "flow_seq 0")

	assertUnchanged(t, l, before)
	assert.Equal(t, created, history(t, l, f.ID))
	assert.Empty(t, history(t, l, g.ID))
	_, ok := secret(t, l, "verifier/"+f.ID)
	assert.False(t, ok, "a refused append must write no secret")
	v, ok := secret(t, l, "keep")
	assert.True(t, ok, "a refused append must delete no secret")
	assert.Equal(t, []byte("kept"), v)

	// The flow still takes its real next record.
	mustAppend(t, l, nil, withFlowSeq(zero, 2))
	assert.Len(t, history(t, l, f.ID), 2)
}

func testConflictGap(t *testing.T, l engine.Log) {
	f := NewFlow(Base)
	c, u, x := f.Created(), f.URLIssued(), f.ExchangeStarted()
	requireConflict(t, l.Append(bg, []states.Record{c, x}, map[string][]byte{"s": []byte("v")}), "flow_seq 1, 3 in one append")
	requireConflict(t, l.Append(bg, []states.Record{c, u, u}, nil), "flow_seq 1, 2, 2 in one append")
	requireConflict(t, l.Append(bg, []states.Record{u, c}, nil), "flow_seq 2, 1 in one append")
	assertUnchanged(t, l, nil)
	_, ok := secret(t, l, "s")
	assert.False(t, ok, "a refused append must write no secret")
	assert.Empty(t, history(t, l, f.ID))
}

func testConflictMixed(t *testing.T, l engine.Log) {
	a, b := NewFlow(Base), NewFlow(Base)
	mustAppend(t, l, nil, a.Created())
	before := scanAll(t, l, 0)
	aNext := a.URLIssued()
	requireConflict(t, l.Append(bg, []states.Record{b.Created(), aNext}, map[string][]byte{"s": []byte("v")}), "records of two flows in one append")
	// Even when each record would continue its own flow.
	b2 := NewFlow(Base)
	requireConflict(t, l.Append(bg, []states.Record{aNext, b2.Created()}, nil), "records of two flows in one append")
	assertUnchanged(t, l, before)
	assert.Empty(t, history(t, l, b.ID))
	assert.Empty(t, history(t, l, b2.ID))
	_, ok := secret(t, l, "s")
	assert.False(t, ok)
}

// withFlowSeq returns r with another FlowSeq.
func withFlowSeq(r states.Record, n uint64) states.Record { r.FlowSeq = n; return r }

func testHistory(t *testing.T, l engine.Log) {
	// Interleave three flows so their records are not contiguous in the log.
	flows := []*Flow{NewFlow(Base), NewFlow(Base.Add(time.Minute)), NewFlow(Base.Add(2 * time.Minute))}
	want := map[string][]states.Record{}
	steps := []func(f *Flow) []states.Record{
		func(f *Flow) []states.Record { return []states.Record{f.Created()} },
		func(f *Flow) []states.Record { return []states.Record{f.URLIssued()} },
		func(f *Flow) []states.Record { return []states.Record{f.ExchangeStarted(), f.Ignored()} },
		func(f *Flow) []states.Record { return []states.Record{f.Succeeded()} },
		func(f *Flow) []states.Record { return []states.Record{f.Ignored()} },
	}
	for _, step := range steps {
		for _, f := range flows {
			want[f.ID] = append(want[f.ID], mustAppend(t, l, nil, step(f)...)...)
		}
	}
	for _, f := range flows {
		h := history(t, l, f.ID)
		assert.Equal(t, want[f.ID], h)
		for i, r := range h {
			assert.Equal(t, uint64(i+1), r.FlowSeq, "History must be in FlowSeq order")
		}
		checkFold(t, h)
	}
}

func testHistoryUnknown(t *testing.T, l engine.Log) {
	assert.Empty(t, history(t, l, "no-such-flow"))
	f := NewFlow(Base)
	mustAppend(t, l, nil, f.Created())
	assert.Empty(t, history(t, l, "no-such-flow"), "an unknown flow has no history in a non-empty log")
	assert.Empty(t, history(t, l, f.ID[:10]), "History is not a prefix match on flow ids")
}

// liveMix appends flows in every situation Live must tell apart, and
// returns the ids of those that must be live.
func liveMix(t *testing.T, l engine.Log) (liveIDs, endedIDs []string) {
	add := func(isLive bool, recs ...states.Record) {
		mustAppend(t, l, nil, recs...)
		if isLive {
			liveIDs = append(liveIDs, recs[0].Flow)
		} else {
			endedIDs = append(endedIDs, recs[0].Flow)
		}
	}
	f := NewFlow(Base)
	add(true, f.Created()) // pending
	f = NewFlow(Base)
	add(true, f.Created(), f.URLIssued()) // awaiting_callback
	f = NewFlow(Base)
	add(true, f.Created(), f.URLIssued(), f.ExchangeStarted(), f.Ignored()) // exchanging, a callback ignored
	f = NewFlow(Base)
	add(false, f.Complete()...)
	f = NewFlow(Base)
	add(false, f.Created(), f.URLIssued(), f.Failed(states.Canceled))
	f = NewFlow(Base)
	add(false, f.Created(), f.Expired())
	// A late callback on a finished flow is recorded and changes nothing:
	// the flow stays out of Live.
	f = NewFlow(Base)
	recs := f.Complete()
	mustAppend(t, l, nil, recs...)
	add(false, f.Ignored())
	// The same when the terminal record and the late callback are apart.
	f = NewFlow(Base)
	add(false, f.Created(), f.URLIssued(), f.Failed(states.ProviderDenied), f.Ignored(), f.Ignored())
	return liveIDs, endedIDs
}

func testLive(t *testing.T, l engine.Log) {
	assert.Empty(t, live(t, l), "an empty log has no live flows")
	liveIDs, endedIDs := liveMix(t, l)
	got := live(t, l)
	assert.ElementsMatch(t, liveIDs, keys(got), "Live must pass exactly the flows whose last record is non-terminal")
	for id, h := range got {
		assert.Equal(t, history(t, l, id), h, "Live passes a flow's whole history")
		checkFold(t, h)
	}
	for _, id := range endedIDs {
		assert.NotContains(t, got, id)
	}

	// A live flow that ends leaves the live set.
	var pending string
	for id, h := range got {
		if len(h) == 1 {
			pending = id
		}
	}
	require.NotEmpty(t, pending)
	f := &Flow{ID: pending, seq: 1, state: states.Pending, at: Base.Add(time.Minute)}
	mustAppend(t, l, nil, f.Failed(states.Superseded))
	assert.NotContains(t, live(t, l), pending)
	assert.Len(t, live(t, l), len(liveIDs)-1)
}

func keys(m map[string][]states.Record) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

var errStop = errors.New("logtest: fn says stop")

func testLiveFnError(t *testing.T, l engine.Log) {
	for range 3 {
		f := NewFlow(Base)
		mustAppend(t, l, nil, f.Created(), f.URLIssued())
	}
	calls := 0
	err := l.Live(bg, func([]states.Record) error { calls++; return errStop })
	assert.ErrorIs(t, err, errStop, "Live must return fn's error")
	assert.Equal(t, 1, calls, "fn's error must stop the walk")
}

func testScan(t *testing.T, l engine.Log) {
	assert.Empty(t, scanAll(t, l, 0), "an empty log scans nothing")
	var all []states.Record
	for i := range 4 {
		f := NewFlow(Base.Add(time.Duration(i) * time.Minute))
		all = append(all, mustAppend(t, l, nil, f.Created(), f.URLIssued())...)
		all = append(all, mustAppend(t, l, nil, f.Failed(states.Canceled))...)
	}
	got := scanAll(t, l, 0)
	require.Equal(t, all, got, "Scan(0) returns every record in Seq order")
	for i := range got {
		after := got[i].Seq
		want := all[i+1:]
		if len(want) == 0 {
			want = nil
		}
		assert.Equal(t, want, scanAll(t, l, after), "Scan(after=%d) returns exactly the records with greater Seq", after)
	}
	assert.Empty(t, scanAll(t, l, all[len(all)-1].Seq+1000))
}

func testScanFnError(t *testing.T, l engine.Log) {
	f := NewFlow(Base)
	mustAppend(t, l, nil, f.Complete()...)
	var seen []uint64
	err := l.Scan(bg, 0, func(r states.Record) error {
		seen = append(seen, r.Seq)
		if len(seen) == 2 {
			return errStop
		}
		return nil
	})
	assert.ErrorIs(t, err, errStop, "Scan must return fn's error")
	assert.Len(t, seen, 2, "fn's error must stop the scan")
}

func testSecrets(t *testing.T, l engine.Log) {
	_, ok := secret(t, l, "verifier/absent")
	assert.False(t, ok, "an absent secret is reported absent, not as an error")

	verifier := []byte("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
	binary := []byte{0, 1, 2, 0xff, 0xfe, 0}
	mustAppend(t, l, map[string][]byte{"verifier/a": verifier, "bin": binary, "empty": {}})
	v, ok := secret(t, l, "verifier/a")
	assert.True(t, ok)
	assert.Equal(t, verifier, v)
	v, ok = secret(t, l, "bin")
	assert.True(t, ok)
	assert.Equal(t, binary, v)
	v, ok = secret(t, l, "empty")
	assert.True(t, ok, "an empty secret is still present")
	assert.Empty(t, v)

	// The returned slice is the caller's: changing it changes nothing stored.
	v, _ = secret(t, l, "verifier/a")
	v[0] = 'X'
	v, _ = secret(t, l, "verifier/a")
	assert.Equal(t, verifier, v, "Secret must return a copy")

	// Overwrite.
	mustAppend(t, l, map[string][]byte{"verifier/a": []byte("second")})
	v, ok = secret(t, l, "verifier/a")
	assert.True(t, ok)
	assert.Equal(t, []byte("second"), v)

	// The map given to Append is the caller's too.
	in := map[string][]byte{"token/github": []byte("gho_16C7e42F292c6912E7710c838347Ae178B4a")}
	mustAppend(t, l, in)
	in["token/github"][0] = 'X'
	v, _ = secret(t, l, "token/github")
	assert.Equal(t, []byte("gho_16C7e42F292c6912E7710c838347Ae178B4a"), v, "Append must not keep the caller's slice")

	// Delete with nil; deleting an absent key is not an error.
	mustAppend(t, l, map[string][]byte{"verifier/a": nil, "never-there": nil})
	_, ok = secret(t, l, "verifier/a")
	assert.False(t, ok, "a nil value deletes the secret")
	_, ok = secret(t, l, "bin")
	assert.True(t, ok, "deleting one secret leaves the others")
}

func testSecretsAtomic(t *testing.T, l engine.Log) {
	f := NewFlow(Base)
	mustAppend(t, l, map[string][]byte{"verifier/" + f.ID: []byte("v1")}, f.Created(), f.URLIssued())
	v, ok := secret(t, l, "verifier/"+f.ID)
	assert.True(t, ok, "secrets land with their records")
	assert.Equal(t, []byte("v1"), v)
	mustAppend(t, l, map[string][]byte{"verifier/" + f.ID: nil, "token/github": []byte("tok")}, f.ExchangeStarted(), f.Succeeded())
	_, ok = secret(t, l, "verifier/"+f.ID)
	assert.False(t, ok)
	_, ok = secret(t, l, "token/github")
	assert.True(t, ok)
	// The refusal side of atomicity is in the Conflict tests.
}

func testPrune(t *testing.T, l engine.Log) {
	cutoff := Base.Add(24 * time.Hour)
	ended := func(at time.Time) *Flow {
		f := NewFlow(at.Add(-3 * time.Second))
		mustAppend(t, l, nil, f.Created(), f.URLIssued())
		f.At(at)
		mustAppend(t, l, nil, f.Failed(states.Canceled))
		return f
	}
	old := ended(cutoff.Add(-2 * time.Hour))
	// Became terminal before the cutoff; a late callback after it does not
	// make it any younger.
	lateCallback := ended(cutoff.Add(-time.Hour))
	lateCallback.At(cutoff.Add(time.Hour))
	mustAppend(t, l, nil, lateCallback.Ignored())
	atCutoff := ended(cutoff)             // not before the cutoff: kept
	young := ended(cutoff.Add(time.Hour)) // kept
	livePending := NewFlow(Base.Add(-240 * time.Hour))
	mustAppend(t, l, nil, livePending.Created()) // live for ten days: never pruned
	liveAwaiting := NewFlow(Base.Add(-240 * time.Hour))
	mustAppend(t, l, nil, liveAwaiting.Created(), liveAwaiting.URLIssued(), liveAwaiting.ExchangeStarted())
	mustAppend(t, l, map[string][]byte{"token/github": []byte("kept")})

	liveBefore := live(t, l)
	kept := map[string][]states.Record{}
	for _, f := range []*Flow{atCutoff, young, livePending, liveAwaiting} {
		kept[f.ID] = history(t, l, f.ID)
	}
	gone := map[uint64]bool{}
	for _, f := range []*Flow{old, lateCallback} {
		for _, r := range history(t, l, f.ID) {
			gone[r.Seq] = true
		}
	}

	n, err := l.Prune(bg, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "Prune returns how many flows it deleted")

	for _, f := range []*Flow{old, lateCallback} {
		assert.Empty(t, history(t, l, f.ID), "a pruned flow has no history")
	}
	for id, h := range kept {
		assert.Equal(t, h, history(t, l, id), "Prune must keep flows that ended at or after the cutoff, and live flows")
	}
	for _, r := range scanAll(t, l, 0) {
		assert.False(t, gone[r.Seq], "Scan returned pruned record seq=%d", r.Seq)
	}
	assert.Len(t, scanAll(t, l, 0), 3+3+1+3, "Scan returns the kept records")
	assert.Equal(t, liveBefore, live(t, l), "Prune changes no live flow")
	v, ok := secret(t, l, "token/github")
	assert.True(t, ok, "Prune deletes no secret")
	assert.Equal(t, []byte("kept"), v)

	n, err = l.Prune(bg, cutoff)
	require.NoError(t, err)
	assert.Zero(t, n, "a second Prune with the same cutoff deletes nothing")

	n, err = l.Prune(bg, cutoff.Add(365*24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 2, n, "a later cutoff prunes the rest of the ended flows, and no live one")
	assert.Equal(t, liveBefore, live(t, l))
}

func testPruneSeq(t *testing.T, l engine.Log) {
	keep := NewFlow(Base)
	mustAppend(t, l, nil, keep.Created())
	// The flow with the log's highest seqs ends and is pruned ...
	f := NewFlow(Base)
	last := mustAppend(t, l, nil, f.Created(), f.Expired())
	n, err := l.Prune(bg, Base.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	// ... and the next append still gets a seq above every seq ever given.
	next := mustAppend(t, l, nil, keep.URLIssued())
	assert.Greater(t, next[0].Seq, last[1].Seq, "Seq must keep increasing after the records with the highest seqs are pruned")
}

func testConcurrentDistinct(t *testing.T, l engine.Log) {
	const writers = 64
	flows := make([]*Flow, writers)
	for i := range flows {
		flows[i] = NewFlow(Base.Add(time.Duration(i) * time.Second))
	}
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i, f := range flows {
		wg.Go(func() {
			for _, batch := range [][]states.Record{{f.Created()}, {f.URLIssued(), f.ExchangeStarted()}} {
				if err := l.Append(bg, batch, map[string][]byte{"verifier/" + f.ID: []byte(f.ID)}); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "writer %d", i)
	}
	all := scanAll(t, l, 0)
	require.Len(t, all, writers*3, "every append lands")
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i].Seq, all[i-1].Seq, "Scan returns unique seqs in increasing order")
	}
	for _, f := range flows {
		h := history(t, l, f.ID)
		require.Len(t, h, 3)
		checkFold(t, h)
		v, ok := secret(t, l, "verifier/"+f.ID)
		assert.True(t, ok)
		assert.Equal(t, []byte(f.ID), v)
	}
	assert.Len(t, live(t, l), writers)
}

func testConcurrentSame(t *testing.T, l engine.Log) {
	const writers = 64
	f := NewFlow(Base)
	mustAppend(t, l, nil, f.Created())
	next := f.URLIssued() // every writer tries to append this flow's FlowSeq 2
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			rec := next
			rec.Data.Message = fmt.Sprintf("writer %d", i)
			errs[i] = l.Append(bg, []states.Record{rec}, map[string][]byte{"winner": fmt.Appendf(nil, "writer %d", i)})
		})
	}
	wg.Wait()
	winners := 0
	winner := -1
	for i, err := range errs {
		if err == nil {
			winners++
			winner = i
			continue
		}
		assert.ErrorIs(t, err, engine.ErrConflict, "a writer that lost the race gets a conflict")
	}
	require.Equal(t, 1, winners, "exactly one writer advances the flow")
	h := history(t, l, f.ID)
	require.Len(t, h, 2)
	assert.Equal(t, fmt.Sprintf("writer %d", winner), h[1].Data.Message, "the record that landed is the winner's")
	v, ok := secret(t, l, "winner")
	assert.True(t, ok)
	assert.Equal(t, fmt.Sprintf("writer %d", winner), string(v), "only the winner's secrets land")
	assert.Len(t, scanAll(t, l, 0), 2)
}

func testCancelled(t *testing.T, l engine.Log) {
	ctx, cancel := context.WithCancel(bg)
	cancel()
	f := NewFlow(Base)
	created := f.Created()
	err := l.Append(ctx, []states.Record{created}, map[string][]byte{"verifier/" + f.ID: []byte("v")})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled, "Append returns the context's error")
	assert.Empty(t, history(t, l, f.ID), "a cancelled append writes no record")
	_, ok := secret(t, l, "verifier/"+f.ID)
	assert.False(t, ok, "a cancelled append writes no secret")

	dctx, dcancel := context.WithDeadline(bg, time.Unix(0, 0))
	defer dcancel()
	err = l.Append(dctx, []states.Record{created}, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, scanAll(t, l, 0))
}

// testDoneContextEveryMethod: every method refuses a done context with its
// error, reads included, as the bbolt log does; a log that answered reads
// from memory anyway would let an embedder's tests pass where the daemon
// fails.
func testDoneContextEveryMethod(t *testing.T, l engine.Log) {
	f := NewFlow(Base)
	mustAppend(t, l, map[string][]byte{"k": []byte("v")}, f.Created(), f.URLIssued())
	ended := NewFlow(Base)
	mustAppend(t, l, nil, ended.Complete()...)
	canceled := f.Failed(states.Canceled)
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(bg)
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) { return context.WithDeadline(bg, time.Unix(0, 0)) }, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			called := false
			h, err := l.History(ctx, f.ID)
			assert.ErrorIs(t, err, tc.want, "History")
			assert.Empty(t, h, "History")
			assert.ErrorIs(t, l.Live(ctx, func([]states.Record) error { called = true; return nil }), tc.want, "Live")
			assert.ErrorIs(t, l.Scan(ctx, 0, func(states.Record) error { called = true; return nil }), tc.want, "Scan")
			assert.False(t, called, "no callback runs on a done context")
			v, ok, err := l.Secret(ctx, "k")
			assert.ErrorIs(t, err, tc.want, "Secret")
			assert.False(t, ok, "Secret")
			assert.Nil(t, v, "Secret")
			n, err := l.Prune(ctx, Base.Add(24*time.Hour))
			assert.ErrorIs(t, err, tc.want, "Prune")
			assert.Zero(t, n, "Prune")
			assert.ErrorIs(t, l.Append(ctx, []states.Record{canceled}, nil), tc.want, "Append")
		})
	}
	assert.Len(t, history(t, l, f.ID), 2, "nothing was written")
	assert.Len(t, history(t, l, ended.ID), 4, "nothing was pruned")
}

func testReopen(t *testing.T, l engine.Log, reopen Reopen) {
	liveIDs, _ := liveMix(t, l)
	mustAppend(t, l, map[string][]byte{"token/github": []byte("gho_secret"), "gone": []byte("x")})
	mustAppend(t, l, map[string][]byte{"gone": nil})
	scanned := scanAll(t, l, 0)
	lives := live(t, l)
	// A flow whose next record is appended after the restart.
	f := NewFlow(Base)
	mustAppend(t, l, nil, f.Created())
	scanned = append(scanned, history(t, l, f.ID)...)

	l = reopen(t, l)

	assert.Equal(t, scanned, scanAll(t, l, 0), "every record survives a reopen")
	got := live(t, l)
	assert.ElementsMatch(t, append(slices.Clone(liveIDs), f.ID), keys(got))
	for id, h := range lives {
		assert.Equal(t, h, got[id])
	}
	v, ok := secret(t, l, "token/github")
	assert.True(t, ok, "secrets survive a reopen")
	assert.Equal(t, []byte("gho_secret"), v)
	_, ok = secret(t, l, "gone")
	assert.False(t, ok, "deleted secrets stay deleted")

	// The flow's last FlowSeq survives: the compare-and-set still holds.
	dup := NewFlow(Base)
	dup.ID = f.ID
	requireConflict(t, l.Append(bg, []states.Record{dup.Created()}, nil), "flow_seq 1 again after reopen")
	next := mustAppend(t, l, nil, f.URLIssued())
	assert.Greater(t, next[0].Seq, scanned[len(scanned)-1].Seq, "Seq keeps increasing across a reopen")
	assert.Len(t, history(t, l, f.ID), 2)
}

func testReopenPrune(t *testing.T, l engine.Log, reopen Reopen) {
	keep := NewFlow(Base)
	mustAppend(t, l, nil, keep.Created())
	f := NewFlow(Base)
	last := mustAppend(t, l, nil, f.Created(), f.Failed(states.Canceled))
	n, err := l.Prune(bg, Base.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, n)

	l = reopen(t, l)

	assert.Empty(t, history(t, l, f.ID), "a pruned flow stays pruned after a reopen")
	assert.Len(t, scanAll(t, l, 0), 1)
	next := mustAppend(t, l, nil, keep.URLIssued())
	assert.Greater(t, next[0].Seq, last[1].Seq, "seqs of pruned records are never given again, even after a reopen")
	n, err = l.Prune(bg, Base.Add(time.Hour))
	require.NoError(t, err)
	assert.Zero(t, n)
}

// classes are the storage error classes; a failure must match exactly one.
var classes = map[string]error{
	"ErrConflict":       engine.ErrConflict,
	"ErrLogUnavailable": engine.ErrLogUnavailable,
	"ErrStorageFull":    engine.ErrStorageFull,
}

// requireClass asserts err wraps want and no other storage error class.
func requireClass(t *testing.T, err, want error, what string) {
	t.Helper()
	require.Error(t, err, "%s must fail", what)
	require.ErrorIs(t, err, want, "%s: %v", what, err)
	for name, other := range classes {
		if other != want {
			require.NotErrorIs(t, err, other, "%s: %q also matches engine.%s", what, err, name)
		}
	}
}

// everyMethod calls each method of l and asserts each fails with want.
func everyMethod(t *testing.T, l engine.Log, f *Flow, want error) {
	t.Helper()
	called := false
	_, err := l.History(bg, f.ID)
	requireClass(t, err, want, "History")
	requireClass(t, l.Live(bg, func([]states.Record) error { called = true; return nil }), want, "Live")
	requireClass(t, l.Scan(bg, 0, func(states.Record) error { called = true; return nil }), want, "Scan")
	assert.False(t, called, "no callback runs on a failed read")
	_, _, err = l.Secret(bg, "k")
	requireClass(t, err, want, "Secret")
	_, err = l.Prune(bg, Base.Add(24*time.Hour))
	requireClass(t, err, want, "Prune")
	requireClass(t, l.Append(bg, []states.Record{f.Failed(states.Canceled)}, map[string][]byte{"k2": []byte("v")}), want, "Append")
}

// testClosed: a closed log fails every call with ErrLogUnavailable, so a
// server answers "unavailable, retry" rather than an internal error.
func testClosed(t *testing.T, l engine.Log) {
	c, ok := l.(io.Closer)
	if !ok {
		t.Skip("the log has no Close method")
	}
	f := NewFlow(Base)
	mustAppend(t, l, map[string][]byte{"k": []byte("v")}, f.Created(), f.URLIssued())
	require.NoError(t, c.Close())
	everyMethod(t, l, f, engine.ErrLogUnavailable)
}

// testFull: a write refused for want of space is ErrStorageFull, writes
// nothing (records or secrets), and the log goes on once space is back.
func testFull(t *testing.T, l engine.Log, full func(*testing.T, engine.Log) func()) {
	f := NewFlow(Base)
	mustAppend(t, l, nil, f.Created(), f.URLIssued())
	heal := full(t, l)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	next := f.ExchangeStarted()
	err := l.Append(bg, []states.Record{next}, map[string][]byte{"k": []byte("v")})
	requireClass(t, err, engine.ErrStorageFull, "Append on full storage")
	g := NewFlow(Base)
	requireClass(t, l.Append(bg, []states.Record{g.Created()}, nil), engine.ErrStorageFull, "Append of a new flow on full storage")
	heal()
	healed = true

	assert.Len(t, history(t, l, f.ID), 2, "the refused append wrote no record")
	assert.Empty(t, history(t, l, g.ID), "the refused new flow wrote no record")
	_, ok := secret(t, l, "k")
	assert.False(t, ok, "the refused append wrote no secret")
	mustAppend(t, l, nil, next)
	assert.Len(t, history(t, l, f.ID), 3, "once space is back the same append goes through")
}

// testUnavailable: an unreachable backend fails every call with
// ErrLogUnavailable, and once back it serves what it held.
func testUnavailable(t *testing.T, l engine.Log, down func(*testing.T, engine.Log) func()) {
	f := NewFlow(Base)
	mustAppend(t, l, map[string][]byte{"k": []byte("v")}, f.Created(), f.URLIssued())
	heal := down(t, l)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	everyMethod(t, l, f, engine.ErrLogUnavailable)
	heal()
	healed = true
	require.Eventually(t, func() bool {
		_, err := l.History(bg, f.ID)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the log serves again once its backend is back")
	assert.Len(t, history(t, l, f.ID), 2, "what it held is still there")
	v, ok := secret(t, l, "k")
	assert.True(t, ok)
	assert.Equal(t, "v", string(v))
}

// A KeepingPruner spares the flows keep names (the engine's active
// connections) and prunes the rest as Prune does.
func testPruneKeeping(t *testing.T, l engine.Log) {
	kp, ok := l.(engine.KeepingPruner)
	if !ok {
		t.Skip("the log does not implement engine.KeepingPruner")
	}
	cutoff := Base.Add(24 * time.Hour)
	var flows []*Flow
	for i := range 3 {
		f := NewFlow(cutoff.Add(-time.Duration(3+i) * time.Hour))
		mustAppend(t, l, nil, f.Created(), f.URLIssued())
		mustAppend(t, l, nil, f.Failed(states.Canceled))
		flows = append(flows, f)
	}
	spared := flows[1].ID
	kept := history(t, l, spared)
	n, err := kp.PruneKeeping(bg, cutoff, func(flow string) bool { return flow == spared })
	require.NoError(t, err)
	assert.Equal(t, 2, n, "PruneKeeping returns how many flows it deleted")
	assert.Empty(t, history(t, l, flows[0].ID))
	assert.Empty(t, history(t, l, flows[2].ID))
	assert.Equal(t, kept, history(t, l, spared), "the named flow is spared")
	n, err = kp.PruneKeeping(bg, cutoff, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "spared once is not spared for ever: a later prune without it deletes it")
}
