package engine

import (
	"container/heap"
	"context"
	"time"

	"flowd.local/flowd/states"
)

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

// deadline is one armed expiry. Entries of flows that ended early stay in
// the heap until their time and are dropped then: cheaper than a search.
type deadline struct {
	at   time.Time
	flow string
}

// deadlineHeap orders every live flow's deadline; one clock timer is armed
// for the earliest. No goroutine per flow, and no wake-up between deadlines.
type deadlineHeap []deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)        { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// rearm arms the clock timer for the earliest deadline. The caller holds e.mu.
func (e *Engine) rearm() {
	if e.armed != nil {
		e.armed.Stop()
		e.armed = nil
	}
	if e.closed || len(e.due) == 0 {
		return
	}
	e.armedAt = e.due[0].at
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
	for len(e.due) > 0 && !e.due[0].at.After(now) {
		d := heap.Pop(&e.due).(deadline)
		if lf := e.live[d.flow]; lf != nil {
			expiring = append(expiring, lf)
		}
	}
	e.armed = nil
	e.rearm()
	e.mu.Unlock()
	ctx := context.Background()
	_ = e.each(expiring, func(lf *liveFlow) error {
		lf.mu.Lock()
		defer lf.mu.Unlock()
		f := lf.flow
		if !f.State.Live() || now.Before(f.Deadline) {
			return nil
		}
		if f.Exchanging {
			// The exchange is bounded by its timeout and decides the flow;
			// look again once it must be over.
			e.mu.Lock()
			heap.Push(&e.due, deadline{at: now.Add(e.cfg.ExchangeTimeout), flow: f.ID})
			if e.armed == nil || now.Add(e.cfg.ExchangeTimeout).Before(e.armedAt) {
				e.rearm()
			}
			e.mu.Unlock()
			return nil
		}
		if _, err := e.commit(ctx, lf, e.record(lf, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired}), e.dropVerifier(lf)); err != nil {
			e.logger.Error("could not expire flow; retrying at the next deadline", "flow", states.ShortID(f.ID), "err", err)
			e.mu.Lock()
			heap.Push(&e.due, deadline{at: now.Add(time.Second), flow: f.ID})
			if e.armed == nil || now.Add(time.Second).Before(e.armedAt) {
				e.rearm()
			}
			e.mu.Unlock()
			return err
		}
		e.logger.Info("flow expired", "flow", states.ShortID(f.ID), "provider", f.Provider)
		return nil
	})
}

// prune deletes finished flows past retention, and schedules the next run.
func (e *Engine) prune() {
	if err := e.enter(); err != nil {
		return
	}
	defer e.inflight.Done()
	cutoff := e.clock.Now().Add(-e.cfg.Retention)
	n, err := e.log.Prune(context.Background(), cutoff)
	if err != nil {
		e.logger.Error("retention: could not delete old flows", "err", err)
	} else if n > 0 {
		e.logger.Info("retention: deleted finished flows", "flows", n, "ended_before", cutoff)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.pruner = e.clock.AfterFunc(pruneEvery, e.prune)
	}
}
