package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/states"
)

// memoryBudget is item 3's target: heap bytes per live flow.
const memoryBudget = 2048

// liveFlows measures items 3 and 7 on one population. Each run starts
// LiveFlows flows on a fresh durable log, all at one instant of a fake
// clock so they share one deadline, and measures the heap they hold. Then
// it steps the clock second by second up to just before the deadline
// (the engine must not wake), and across it: the wall time of that last
// Advance is the time to expire them all, compared with raw Batch appends
// of as many records of the same size, in the same run.
func (b *Bench) liveFlows(ctx context.Context) ([]*Row, error) {
	s := b.Sizes
	mem := &Row{Item: "3", Figure: fmt.Sprintf("heap per live flow at %s live, after GC", num(float64(s.LiveFlows))), Unit: "B",
		Baseline: "budget (B)", Target: Target{AtMost, 1}}
	expiry := &Row{Item: "7a", Figure: fmt.Sprintf("flows expired at one deadline (%s)", num(float64(s.LiveFlows))), Unit: "/s",
		Baseline: "raw bbolt Batch appends/s", Target: Target{AtLeast, 0.5}}
	wrote := &Row{Item: "7c", Figure: "bytes written per expired flow", Unit: "B",
		Baseline: "raw Batch bytes written per record", Note: "7c has no target: it shows where 7a's time goes"}
	idle := &Row{Item: "7b", Figure: "timer wake-ups while idle", Unit: "count", Count: true, Target: Target{AtMost, 0},
		Note: "7b steps a fake clock through the whole TTL one second at a time and counts the engine's timer firings before the deadline"}
	for run := range b.Runs {
		dir, done, err := b.tempDir()
		if err != nil {
			return nil, err
		}
		r, err := b.liveRun(ctx, dir)
		done()
		if err != nil {
			return nil, fmt.Errorf("items 3 and 7, run %d: %w", run+1, err)
		}
		mem.Add(r.perFlow, memoryBudget)
		expiry.Add(r.expired, r.raw)
		wrote.Add(r.wrote, r.rawWrote)
		idle.Fig = append(idle.Fig, float64(r.idleWakeups))
		b.logf("items 3, 7 run %d/%d: %.0f B/flow; expired %.0f/s vs raw Batch %.0f/s, %.0f B written per flow vs %.0f B per raw record; %d idle wake-ups, %d at the deadline",
			run+1, b.Runs, r.perFlow, r.expired, r.raw, r.wrote, r.rawWrote, r.idleWakeups, r.deadlineWakeups)
	}
	return []*Row{mem, expiry, wrote, idle}, nil
}

type liveResult struct {
	perFlow                      float64
	expired, raw                 float64
	idleWakeups, deadlineWakeups int64
	wrote, rawWrote              float64 // bytes passed to write(2) per flow expired / record
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (b *Bench) liveRun(ctx context.Context, dir string) (liveResult, error) {
	var r liveResult
	s := b.Sizes
	log, err := openLog(filepath.Join(dir, "flowd.db"), false)
	if err != nil {
		return r, err
	}
	defer log.Close()
	clk := fakeclock.New(epoch)
	e, err := engine.Open(ctx, engineConfig(log, clk))
	if err != nil {
		return r, err
	}
	defer e.Close()

	var sample string // one flow, to read an expiry record back
	before := heapInUse()
	// A account per flow: flows of one account supersede each other.
	err = fanOut(ctx, s.Workers, s.LiveFlows, func(ctx context.Context, _, i int) error {
		st, err := e.Start(ctx, engine.StartRequest{Provider: providerName, Account: fmt.Sprintf("user-%d", i)})
		if i == 0 {
			sample = st.ID
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("start flows: %w", err)
	}
	after := heapInUse()
	if got := e.Stats().Live; got != s.LiveFlows {
		return r, fmt.Errorf("%d flows live after starting %d", got, s.LiveFlows)
	}
	r.perFlow = (float64(after) - float64(before)) / float64(s.LiveFlows)

	ttl := engine.DefaultTTL
	for range int(ttl/time.Second) - 1 {
		clk.Advance(time.Second)
	}
	r.idleWakeups = e.Stats().TimerWakeups
	io, begin := readIO(), time.Now()
	clk.Advance(time.Second)
	elapsed := time.Since(begin)
	wrote := readIO().sub(io)
	st := e.Stats()
	r.deadlineWakeups = st.TimerWakeups - r.idleWakeups
	if st.Live != 0 {
		return r, fmt.Errorf("%d of %d flows still live after their deadline", st.Live, s.LiveFlows)
	}
	r.expired = float64(s.LiveFlows) / elapsed.Seconds()

	// The baseline appends records of the size the expiry wrote.
	h, err := log.History(ctx, sample)
	if err != nil || len(h) == 0 || h[len(h)-1].Event != states.DeadlinePassed {
		return r, fmt.Errorf("read back an expired flow (%d records): %v", len(h), err)
	}
	enc, err := h[len(h)-1].Encode()
	if err != nil {
		return r, err
	}
	size := len(enc)
	io = readIO()
	if r.raw, err = rawBatch(ctx, dir, s.Workers, s.LiveFlows, size); err != nil {
		return r, err
	}
	rawWrote := readIO().sub(io)
	r.wrote, r.rawWrote = math.NaN(), math.NaN()
	if wrote.ok && rawWrote.ok {
		r.wrote, r.rawWrote = wrote.bytes/float64(s.LiveFlows), rawWrote.bytes/float64(s.LiveFlows)
	}
	return r, nil
}
