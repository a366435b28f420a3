package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// durable measures items 1 and 5. Each run drives DurableFlows flows
// through the engine on flowd's bbolt log with Workers in flight and, on
// the same disk, the three baselines: raw Batch appends and one Update per
// record (both with the engine's mean record size, at the same
// concurrency), and the same engine on memlog. Each does half its work in
// the order engine, raw, naive, memlog and the other half in the reverse
// order, so a machine that speeds up or slows down during the run weighs
// on both sides of every ratio alike. The engine's database is then
// measured for item 5.
func (b *Bench) durable(ctx context.Context) ([]*Row, error) {
	vsRaw := &Row{Item: "1a", Figure: "engine durable transitions", Unit: "/s",
		Baseline: "raw bbolt Batch appends/s", Target: Target{AtLeast, 0.5}}
	vsNaive := &Row{Item: "1b", Figure: "engine durable transitions", Unit: "/s",
		Baseline: "one db.Update per transition/s", Target: Target{AtLeast, 10}}
	vsMem := &Row{Item: "1c", Figure: "engine durable transitions", Unit: "/s",
		Baseline: "same engine on memlog/s", Note: "1c has no target: it is the price of durability"}
	lat := &Row{Item: "1d", Figure: "engine append latency", Unit: "ms",
		Baseline: "raw Batch call latency (ms)", Note: "1d and 1e have no target: they show where 1a's time goes"}
	wrote := &Row{Item: "1e", Figure: "bytes written per transition", Unit: "B",
		Baseline: "raw Batch bytes written per record"}
	shared := &Row{Item: "1f", Figure: "engine appends per group commit", Unit: "count",
		Baseline: "appends in flight (one per worker)",
		Note:     "1f has no target: how many of the workers' appends shared each commit (persist.DB.Stats)"}
	disk := &Row{Item: "5", Figure: "database file bytes per event", Unit: "B",
		Baseline: "encoded record bytes per event", Target: Target{AtMost, 1.3}}
	var alloc []float64
	for run := range b.Runs {
		dir, done, err := b.tempDir()
		if err != nil {
			return nil, err
		}
		r, err := b.durableRun(ctx, dir)
		done()
		if err != nil {
			return nil, fmt.Errorf("item 1, run %d: %w", run+1, err)
		}
		vsRaw.Add(r.engine, r.raw)
		vsNaive.Add(r.engine, r.naive)
		vsMem.Add(r.engine, r.mem)
		lat.Add(r.engineLat*1000, r.rawLat*1000)
		wrote.Add(r.engineWrite, r.rawWrite)
		shared.Add(r.perCommit, float64(b.Sizes.Workers))
		disk.Add(r.fileBytes/r.events, r.encoded/r.events)
		alloc = append(alloc, r.allocated/r.events)
		b.logf("item 1 run %d/%d: engine %.0f/s, raw Batch %.0f/s, naive %.0f/s, memlog %.0f/s; append %.2f ms vs raw %.2f ms; written per record %.0f B in %.2f calls vs raw %.0f B in %.2f calls; item 5: file %.0f B/event (%.0f B allocated), records %.0f B/event; file bytes per event by bucket: %s",
			run+1, b.Runs, r.engine, r.raw, r.naive, r.mem, r.engineLat*1000, r.rawLat*1000, r.engineWrite, r.engineCalls, r.rawWrite, r.rawCalls, r.fileBytes/r.events, r.allocated/r.events, r.encoded/r.events, r.buckets)
	}
	disk.Note = fmt.Sprintf("5 divides the file's apparent size (what ls shows) by the events in it, after %s flows; records, indexes and sealed secrets all count (blocks allocated: %s B/event)",
		num(float64(b.Sizes.DurableFlows)), num(median(alloc)))
	return []*Row{vsRaw, vsNaive, vsMem, lat, wrote, shared, disk}, nil
}

type durableResult struct {
	engine, raw, naive, mem float64
	engineLat, rawLat       float64
	engineWrite, rawWrite   float64 // bytes passed to write(2) per record
	engineCalls, rawCalls   float64 // write syscalls per record
	events, encoded         float64
	fileBytes, allocated    float64
	perCommit               float64 // engine appends per group commit
	buckets                 string  // where the file's bytes are, per event
}

// engineSide is an open engine that can drive flows in several steps.
type engineSide struct {
	log   engine.Log
	probe *probe
	e     *engine.Engine
	// took and wrote add up the time and the writes of its steps.
	took  time.Duration
	wrote ioCount
}

func openEngineSide(ctx context.Context, log engine.Log, timed bool) (*engineSide, error) {
	p := &probe{Log: log, timed: timed}
	e, err := engine.Open(ctx, engineConfig(p, nil))
	if err != nil {
		return nil, err
	}
	return &engineSide{log: log, probe: p, e: e}, nil
}

// drive runs flows connects with workers in flight, each worker its own
// account so no flow supersedes another.
func (s *engineSide) drive(ctx context.Context, workers, flows int) error {
	io, begin := readIO(), time.Now()
	err := fanOut(ctx, workers, flows, func(ctx context.Context, w, _ int) error {
		return connect(ctx, s.e, fmt.Sprintf("worker-%d", w))
	})
	s.took += time.Since(begin)
	s.wrote = s.wrote.add(readIO().sub(io))
	return err
}

func (s *engineSide) rate() float64 { return float64(s.probe.records.Load()) / s.took.Seconds() }

func (b *Bench) durableRun(ctx context.Context, dir string) (r durableResult, err error) {
	s := b.Sizes
	path := filepath.Join(dir, "flowd.db")
	log, err := openLog(path, false)
	if err != nil {
		return r, err
	}
	logOpen := true
	defer func() {
		if logOpen {
			err = errors.Join(err, log.Close())
		}
	}()
	eng, err := openEngineSide(ctx, log, true)
	if err != nil {
		return r, err
	}
	defer eng.e.Close()

	// The first half of the engine's flows tells the record size the
	// baselines write.
	half := max(s.DurableFlows/2, 1)
	if err := eng.drive(ctx, s.Workers, half); err != nil {
		return r, fmt.Errorf("engine on bbolt: %w", err)
	}
	var n, bytes int
	if err := log.Scan(ctx, 0, func(rec states.Record) error {
		enc, err := rec.Encode()
		n, bytes = n+1, bytes+len(enc)
		return err
	}); err != nil || n == 0 {
		return r, fmt.Errorf("read back the engine's records (%d): %v", n, err)
	}
	recSize := bytes / n
	raw, err := openRaw(filepath.Join(dir, "raw-batch.db"), s.Workers, recSize, true)
	if err != nil {
		return r, err
	}
	defer raw.close()
	naive, err := openRaw(filepath.Join(dir, "naive.db"), s.Workers, recSize, false)
	if err != nil {
		return r, err
	}
	defer naive.close()
	// The memlog side keeps every record it is given in memory: each half
	// gets a fresh log, dropped after it, so the engine on bbolt never runs
	// beside tens of MiB of someone else's live heap, which would make the
	// garbage collector run far less often than in flowd.
	var memRecords int64
	var memTook time.Duration
	driveMem := func() error {
		mem, err := openEngineSide(ctx, memlog.New(), false)
		if err != nil {
			return err
		}
		err = mem.drive(ctx, s.Workers, half)
		memRecords += mem.probe.records.Load()
		memTook += mem.took
		return errors.Join(err, mem.e.Close())
	}
	rawN := int(eng.probe.records.Load()) // as many records per half as the engine's half wrote
	var rawTook, naiveTook time.Duration
	var rawWrote ioCount
	steps := []func() error{
		func() error {
			io := readIO()
			d, err := raw.append(ctx, rawN)
			rawTook += d
			rawWrote = rawWrote.add(readIO().sub(io))
			return err
		},
		func() error {
			d, err := naive.append(ctx, max(s.NaiveOps/2, 1))
			naiveTook += d
			return err
		},
		driveMem,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return r, err
		}
	}
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i](); err != nil {
			return r, err
		}
	}
	if err := eng.drive(ctx, s.Workers, max(s.DurableFlows-half, 1)); err != nil {
		return r, fmt.Errorf("engine on bbolt: %w", err)
	}
	r.engine = eng.rate()
	st := log.Stats()
	r.perCommit = float64(st.Appends) / float64(max(st.Commits, 1))
	r.raw = float64(2*rawN) / rawTook.Seconds()
	r.naive = float64(2*max(s.NaiveOps/2, 1)) / naiveTook.Seconds()
	r.mem = float64(memRecords) / memTook.Seconds()
	r.engineLat, r.rawLat = eng.probe.medianLatency(), raw.medianLatency()
	if eng.wrote.ok && rawWrote.ok {
		recs := float64(eng.probe.records.Load())
		r.engineWrite, r.rawWrite = eng.wrote.bytes/recs, rawWrote.bytes/float64(2*rawN)
		r.engineCalls, r.rawCalls = eng.wrote.calls/recs, rawWrote.calls/float64(2*rawN)
	} else {
		r.engineWrite, r.rawWrite = math.NaN(), math.NaN()
	}

	// Item 5: every event in the file, encoded as the log encodes it,
	// against the file's size once closed.
	if err := eng.e.Close(); err != nil {
		return r, err
	}
	err = log.Scan(ctx, 0, func(rec states.Record) error {
		enc, err := rec.Encode()
		r.events++
		r.encoded += float64(len(enc))
		return err
	})
	logOpen = false
	if cerr := log.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return r, fmt.Errorf("read back the engine's log: %w", err)
	}
	size, alloc, err := fileBytes(path)
	if err != nil {
		return r, err
	}
	r.fileBytes, r.allocated = float64(size), float64(alloc)
	r.buckets, err = bucketBytes(path, r.events)
	return r, err
}
