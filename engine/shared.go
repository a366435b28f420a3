package engine

import (
	"context"
	"errors"
	"time"

	"github.com/flowdhq/flowd/states"
)

// Shared logs: several engines (flowd replicas) on one Log that implements
// Watcher. Every engine holds every live flow: it adopts the flows other
// engines start from the log's watch, applies the transitions they record
// (which wakes its waiters), and arms every live flow's deadline. Two
// engines acting on one flow at once both append, and the log's
// compare-and-set lets exactly one through; the other re-reads the flow
// (refresh) and acts on what it finds, or drops its action.

// conflictRetries bounds how often an operation that lost a race for a
// flow re-reads it and tries again.
const conflictRetries = 3

// outcomeRetries bounds how often an exchange's outcome is recorded again
// after other engines recorded callbacks meanwhile. It is larger: every
// other engine gives up after conflictRetries, and an outcome not recorded
// leaves the flow mid-exchange until it is presumed lost.
const outcomeRetries = 16

// rewatchPause is how long the engine waits before it watches a shared log
// again after its watch ended with an error.
const rewatchPause = time.Second

// follow watches the shared log from head until the engine closes,
// re-reading the live flows whenever the watch has to start over.
func (e *Engine) follow(head uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopWatch = cancel
	e.watchDone = make(chan struct{})
	go func() {
		defer close(e.watchDone)
		for {
			err := e.shared.Watch(ctx, head, e.observe)
			if ctx.Err() != nil {
				return
			}
			e.logger.Warn("lost the watch of the shared log; reading the live flows again", "err", err)
			e.conns.drop() // it may have missed connects and disconnects
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(rewatchPause):
				}
				if head, err = e.shared.Head(ctx); err == nil {
					if err = e.resync(ctx); err == nil {
						break
					}
				}
				e.logger.Warn("could not read the shared log's live flows; retrying", "err", err)
			}
		}
	}()
}

// resync adopts the live flows the engine does not hold and brings the ones
// it holds up to date, after a watch that could not resume.
func (e *Engine) resync(ctx context.Context) error {
	seen := map[string]bool{}
	err := e.log.Live(ctx, func(history []states.Record) error {
		seen[history[0].Flow] = true
		e.observeHistory(ctx, history)
		return nil
	})
	if err != nil {
		return err
	}
	e.mu.Lock()
	var gone []*liveFlow
	for id, lf := range e.live {
		if !seen[id] {
			gone = append(gone, lf)
		}
	}
	e.mu.Unlock()
	for _, lf := range gone {
		// No longer live in the log: ended elsewhere while unwatched.
		lf.mu.Lock()
		e.refresh(ctx, lf)
		lf.mu.Unlock()
	}
	return nil
}

// observeHistory adopts or updates a flow from its whole history.
func (e *Engine) observeHistory(ctx context.Context, history []states.Record) {
	if lf := e.lookup(history[0].Flow); lf != nil {
		lf.mu.Lock()
		e.advance(ctx, lf, history)
		lf.mu.Unlock()
		return
	}
	e.adoptHistory(history)
}

// observe applies one append of the shared log, made by this engine or
// another. The engine's own appends are already applied and skipped.
func (e *Engine) observe(recs []states.Record) {
	if len(recs) == 0 {
		return
	}
	ctx := context.Background()
	lf := e.lookup(recs[0].Flow)
	if lf != nil {
		lf.mu.Lock()
		e.advance(ctx, lf, recs)
		var held *states.Flow
		if touchesConnection(recs) {
			f := lf.flow
			held = &f
		}
		lf.mu.Unlock()
		if held != nil {
			e.conns.observed(recs, held)
		}
		return
	}
	if touchesConnection(recs) {
		e.conns.observed(recs, nil)
	}
	if recs[len(recs)-1].To.Terminal() {
		// The end of a flow this engine does not hold: nothing to wake.
		return
	}
	if recs[0].FlowSeq == 1 {
		e.adoptHistory(recs)
		return
	}
	// A live flow this engine never saw begin: read it whole.
	if _, err := e.load(ctx, recs[0].Flow); err != nil {
		e.logger.Warn("could not load a flow started elsewhere", "flow", states.ShortID(recs[0].Flow), "err", err)
	}
}

// adoptHistory makes a flow another engine started live here, unless this
// engine holds it already or is starting it itself.
func (e *Engine) adoptHistory(history []states.Record) *liveFlow {
	f, err := states.Fold(history)
	if err != nil {
		e.logger.Warn("a flow in the shared log does not replay", "flow", states.ShortID(history[0].Flow), "err", err)
		return nil
	}
	if !f.State.Live() {
		return nil
	}
	lf := &liveFlow{flow: f, done: make(chan struct{}), index: -1}
	if e.pollsDevice(f) {
		// Any engine may poll it, one at a time (devicePoll claims it).
		lf.dev = &deviceState{}
	}
	noteRecords(lf, history)
	e.mu.Lock()
	if cur := e.live[f.ID]; cur != nil || e.starting[f.ID] || e.closed {
		e.mu.Unlock()
		return cur
	}
	e.adoptLocked(lf)
	e.mu.Unlock()
	return lf
}

// advance applies recs to lf, skipping records it has, and re-reading the
// flow if recs do not follow on. The caller holds lf.mu.
func (e *Engine) advance(ctx context.Context, lf *liveFlow, recs []states.Record) {
	changed := false
	for _, rec := range recs {
		if rec.FlowSeq <= lf.flow.LastSeq {
			continue
		}
		next, err := lf.flow.Apply(rec)
		if rec.FlowSeq != lf.flow.LastSeq+1 || err != nil {
			e.refresh(ctx, lf)
			return
		}
		lf.flow = next
		noteRecords(lf, []states.Record{rec})
		changed = true
	}
	if changed {
		e.settle(lf)
	}
}

// refresh re-reads lf from the log after another engine advanced it. The
// caller holds lf.mu.
func (e *Engine) refresh(ctx context.Context, lf *liveFlow) {
	history, err := e.log.History(context.WithoutCancel(ctx), lf.flow.ID)
	if err != nil {
		e.logger.Warn("could not re-read a flow another engine advanced", "flow", states.ShortID(lf.flow.ID), "err", err)
		return
	}
	if len(history) == 0 {
		// Pruned: it ended long ago. Wake its waiters, who find it gone.
		if lf.done != nil {
			e.retire(lf)
		}
		return
	}
	f, err := states.Fold(history)
	if err != nil {
		e.logger.Warn("a flow in the shared log does not replay", "flow", states.ShortID(lf.flow.ID), "err", err)
		return
	}
	if f.LastSeq <= lf.flow.LastSeq {
		return
	}
	lf.flow = f
	noteRecords(lf, history)
	e.settle(lf)
}

// settle retires lf if it ended, or re-arms its timer for what it now waits
// on. The caller holds lf.mu.
func (e *Engine) settle(lf *liveFlow) {
	if lf.flow.State.Terminal() {
		if lf.done != nil {
			e.retire(lf)
		}
		return
	}
	e.mu.Lock()
	if e.live[lf.flow.ID] == lf {
		e.schedule(lf, e.wakeFor(lf))
	}
	e.mu.Unlock()
}

// noteRecords keeps what lf's timer needs from records applied to it.
func noteRecords(lf *liveFlow, recs []states.Record) {
	for _, rec := range recs {
		if rec.Event == states.Created {
			lf.born = rec.Seq
			lf.perStart = rec.Data.MCP().Registration == RegisteredPerStart
		}
		if rec.Event == states.ExchangeStarted {
			lf.exchangeSince = rec.Time
		}
	}
}

// wakeFor is when the timer must look at lf: its deadline, or, for a flow
// another engine is exchanging, once that engine must have recorded the
// outcome (its exchange timeout, and as long again to record it): an engine
// that died mid-exchange leaves the flow to the others to end. The caller
// holds lf.mu.
func (e *Engine) wakeFor(lf *liveFlow) time.Time {
	if lf.dev != nil && lf.flow.State.Live() {
		if at := e.pollAt(lf); at.Before(lf.flow.Deadline) {
			return at
		}
	}
	if e.remoteExchange(lf) {
		if due := e.exchangeDue(lf); due.Before(lf.flow.Deadline) {
			return due
		}
	}
	return lf.flow.Deadline
}

// remoteExchange reports whether lf is mid-exchange on another engine (or
// on none: one that stopped). The caller holds lf.mu.
func (e *Engine) remoteExchange(lf *liveFlow) bool {
	return e.shared != nil && lf.flow.Exchanging && !lf.exchanging
}

// exchangeDue is when an exchange started elsewhere is presumed lost.
func (e *Engine) exchangeDue(lf *liveFlow) time.Time {
	return lf.exchangeSince.Add(2 * e.cfg.ExchangeTimeout)
}

// load reads a live flow this engine does not hold from a shared log and
// adopts it. It returns nil, without error, for an unknown or finished flow
// and on an unshared log (whose flows are all in memory).
func (e *Engine) load(ctx context.Context, state string) (*liveFlow, error) {
	if e.shared == nil || state == "" {
		return nil, nil
	}
	history, err := e.log.History(ctx, state)
	if err != nil {
		return nil, err
	}
	if len(history) == 0 {
		return nil, nil
	}
	return e.adoptHistory(history), nil
}

// hold returns the live flow state, loading it from a shared log if this
// engine does not hold it yet; nil if it is not live.
func (e *Engine) hold(ctx context.Context, state string) (*liveFlow, error) {
	if lf := e.lookup(state); lf != nil {
		return lf, nil
	}
	return e.load(ctx, state)
}

// conflict reports whether err is a lost compare-and-set.
func conflict(err error) bool { return errors.Is(err, ErrConflict) }

// tolerateConflict drops a lost race: another engine advanced the flow
// first, and this one re-read it.
func tolerateConflict(err error) error {
	if conflict(err) {
		return nil
	}
	return err
}
