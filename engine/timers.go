package engine

import (
	"container/heap"
	"context"
	"time"

	"github.com/flowdhq/flowd/states"
)

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

// deadlineHeap orders the live flows by when the timer must next look at
// them (their deadline, or a retry time); one clock timer is armed for the
// earliest. No goroutine per flow, and no wake-up between deadlines. A flow
// that ends early leaves the heap at once, so an idle engine arms nothing.
// It is guarded by Engine.mu, as is every liveFlow's wakeAt and index.
type deadlineHeap []*liveFlow

func (h deadlineHeap) Len() int { return len(h) }

// Less breaks ties by birth: flows sharing a deadline (started together)
// then expire in the order they were created, which is the order of the
// log's indexes, so each group commit of expiries writes neighbouring
// index entries instead of entries all over the log.
func (h deadlineHeap) Less(i, j int) bool {
	if h[i].wakeAt.Equal(h[j].wakeAt) {
		return h[i].born < h[j].born
	}
	return h[i].wakeAt.Before(h[j].wakeAt)
}
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	lf := x.(*liveFlow)
	lf.index = len(*h)
	*h = append(*h, lf)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	lf := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	lf.index = -1
	return lf
}

// schedule makes the timer look at lf at time at. The caller holds e.mu.
func (e *Engine) schedule(lf *liveFlow, at time.Time) {
	lf.wakeAt = at
	if lf.index >= 0 {
		heap.Fix(&e.due, lf.index)
	} else {
		heap.Push(&e.due, lf)
	}
	// Re-arm only when the earliest time moved (either way: a flow moved
	// later may have been the earliest).
	if e.armed == nil || !e.due[0].wakeAt.Equal(e.armedAt) {
		e.rearm()
	}
}

// unschedule takes lf out of the heap. The timer is re-armed only when the
// earliest time changes, so flows sharing a deadline cost one re-arm at
// most, and it is stopped when nothing is left. The caller holds e.mu.
func (e *Engine) unschedule(lf *liveFlow) {
	if lf.index < 0 {
		return
	}
	heap.Remove(&e.due, lf.index)
	if len(e.due) == 0 || !e.due[0].wakeAt.Equal(e.armedAt) {
		e.rearm()
	}
}

// rearm arms the clock timer for the earliest time in the heap, or stops
// it when the heap is empty. The caller holds e.mu.
func (e *Engine) rearm() {
	if e.armed != nil {
		e.armed.Stop()
		e.armed = nil
	}
	if e.closed || len(e.due) == 0 {
		return
	}
	e.armedAt = e.due[0].wakeAt
	e.armed = e.clock.AfterFunc(e.armedAt.Sub(e.clock.Now()), e.fire)
}

// fire expires every flow whose deadline has come, then re-arms.
func (e *Engine) fire() {
	e.wakeups.Add(1)
	if err := e.enter(); err != nil {
		return
	}
	defer e.inflight.Done()
	now := e.clock.Now()
	var expiring []*liveFlow
	e.mu.Lock()
	for len(e.due) > 0 && !e.due[0].wakeAt.After(now) {
		expiring = append(expiring, heap.Pop(&e.due).(*liveFlow))
	}
	// A timer that was stopped too late to prevent this call may have been
	// replaced already: rearm stops whichever timer is current, so none is
	// left behind to fire for nothing.
	e.rearm()
	e.mu.Unlock()
	ctx := context.Background()
	retry := func(lf *liveFlow, at time.Time) {
		e.mu.Lock()
		if e.live[lf.flow.ID] == lf {
			e.schedule(lf, at)
		}
		e.mu.Unlock()
	}
	_ = e.each(expiring, func(lf *liveFlow) error {
		// dev is set before a flow is published and never changes: other
		// flows skip the device check without taking their lock twice.
		if lf.dev != nil && e.devicePoll(lf, now, retry) {
			return nil
		}
		lf.mu.Lock()
		defer lf.mu.Unlock()
		f := lf.flow
		if !f.State.Live() {
			return nil
		}
		if e.remoteExchange(lf) {
			// Another engine on a shared log is exchanging the code: it
			// decides the flow, unless it stopped before recording the
			// outcome.
			if due := e.exchangeDue(lf); now.Before(due) {
				retry(lf, due)
				return nil
			}
		} else if now.Before(f.Deadline) {
			retry(lf, f.Deadline)
			return nil
		}
		if f.Exchanging && lf.exchanging {
			// The exchange is bounded by its timeout and decides the flow;
			// look again once it must be over.
			retry(lf, now.Add(e.cfg.ExchangeTimeout))
			return nil
		}
		ending := e.record(lf, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired})
		if f.Exchanging {
			// The exchange is over but the log refused its outcome: end the
			// flow as the next open would, rather than leave it mid-exchange
			// (uncancelable, its waiters never woken) until a restart.
			ending = e.record(lf, states.Failed, states.Data{Reason: states.ExchangeInterrupted,
				Message: "the outcome of the code's exchange could not be recorded; the code is not redeemed again"})
		}
		if _, err := e.commit(ctx, lf, ending, e.dropFlowSecrets(lf)); err != nil {
			if conflict(err) {
				// Another engine on a shared log advanced the flow first
				// (expired it, most likely): lf was re-read. Look again
				// shortly if it is still live.
				if lf.flow.State.Live() {
					retry(lf, now.Add(time.Second))
				}
				return nil
			}
			e.logger.Error("could not expire flow; retrying in a second", "flow", states.ShortID(f.ID), "err", err)
			retry(lf, now.Add(time.Second))
			return err
		}
		e.logger.Info("flow ended at its deadline", "flow", states.ShortID(f.ID), "provider", f.Provider, "reason", ending[0].Data.Reason)
		return nil
	})
}

// prune deletes finished flows past retention, and schedules the next run.
func (e *Engine) prune() {
	e.pruneOnce()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.pruner = e.clock.AfterFunc(pruneEvery, e.prune)
	}
}

// pruneOnce deletes the flows that ended before the retention period,
// sparing those of connections that still hold their token.
func (e *Engine) pruneOnce() {
	if err := e.enter(); err != nil {
		return
	}
	defer e.inflight.Done()
	cutoff := e.clock.Now().Add(-e.cfg.Retention)
	var n int
	var err error
	if kp, ok := e.log.(KeepingPruner); ok {
		// A connection that still holds its token keeps its flow: its
		// token events go on being recorded there.
		var keep map[string]bool
		if keep, err = e.connectionFlows(e.background); err == nil {
			n, err = kp.PruneKeeping(e.background, cutoff, func(flow string) bool { return keep[flow] })
		}
	} else {
		n, err = e.log.Prune(e.background, cutoff)
	}
	switch {
	case err != nil && e.background.Err() != nil:
		// Close stopped it; the next Open prunes again.
	case err != nil:
		e.logger.Error("retention: could not delete old flows", "err", err)
	case n > 0:
		e.logger.Info("retention: deleted finished flows", "flows", n, "ended_before", cutoff)
	}
}
