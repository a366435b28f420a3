package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/flowdhq/flowd/states"
)

// recoveryWorkers bounds concurrent appends at open and at a shared
// deadline: enough for the log to group them into few commits. A commit's
// cost is mostly its fsync and the index pages it writes, both shared by
// everything in it: on the bbolt log, expiring 20k flows ran at about 50k/s
// with 64 workers and 100k/s with 256 (commits of about 40 and 140
// expiries), and 1000 gained little more.
const recoveryWorkers = 256

// recover loads live flows, interrupting and expiring those that cannot go on.
func (e *Engine) recover(ctx context.Context) error {
	now := e.clock.Now()
	var interrupted, overdue []*liveFlow
	err := e.log.Live(ctx, func(history []states.Record) error {
		f, err := states.Fold(history)
		if err != nil {
			return fmt.Errorf("replay live flow: %w", err)
		}
		lf := &liveFlow{flow: f, done: make(chan struct{}), index: -1}
		if e.pollsDevice(f) {
			// Polling resumes on the recorded schedule (wakeFor).
			lf.dev = &deviceState{}
		}
		noteRecords(lf, history)
		switch {
		case f.Exchanging && e.shared != nil:
			// Another engine may be exchanging the code right now: leave
			// the flow to it, and end it only if it never records the
			// outcome (see wakeFor).
			e.adopt(lf)
		case f.Exchanging:
			interrupted = append(interrupted, lf)
		case !now.Before(f.Deadline):
			overdue = append(overdue, lf)
		default:
			e.adopt(lf)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: open: recover: %w", err)
	}
	err = e.each(interrupted, func(lf *liveFlow) error {
		_, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason:  states.ExchangeInterrupted,
			Message: "flowd stopped while the code was being exchanged; the code is not redeemed again",
		}), e.dropFlowSecrets(lf))
		return tolerateConflict(err)
	})
	if err != nil {
		return fmt.Errorf("engine: open: interrupt exchanges: %w", err)
	}
	err = e.each(overdue, func(lf *liveFlow) error {
		_, err := e.commit(ctx, lf, e.record(lf, states.DeadlinePassed, states.Data{Reason: states.ExpiredWhileDown}), e.dropFlowSecrets(lf))
		return tolerateConflict(err)
	})
	if err != nil {
		return fmt.Errorf("engine: open: expire overdue flows: %w", err)
	}
	e.mu.Lock()
	e.rearm()
	e.mu.Unlock()
	if n := len(interrupted) + len(overdue); n > 0 || len(e.live) > 0 {
		e.logger.Info("recovered flows", "live", len(e.live), "interrupted", len(interrupted), "expired_while_down", len(overdue))
	}
	return nil
}

// each runs fn over flows with bounded concurrency, so their appends share commits.
func (e *Engine) each(flows []*liveFlow, fn func(*liveFlow) error) error {
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		sem   = make(chan struct{}, recoveryWorkers)
	)
	for _, lf := range flows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(lf); err != nil {
				errMu.Lock()
				first = cmpErr(first, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
