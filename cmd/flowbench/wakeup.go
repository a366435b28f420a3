package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// wakeInFlight is how many waited-on flows complete at once in item 4:
// enough for appends to share commits as they do in a busy daemon.
const wakeInFlight = 8

// wakeup measures item 4: the time from the moment the engine begins the
// append that completes a flow to the moment a waiter returns with the
// completed flow, against the median latency of every durable append of
// the same run. The waiter can see the completion no sooner than that
// append is durable, so the ratio's floor is about 1x; a poll loop would
// add up to its interval (2 s).
func (b *Bench) wakeup(ctx context.Context) ([]*Row, error) {
	inproc := &Row{Item: "4a", Figure: "Wait (in-process) sees completion", Unit: "ms",
		Baseline: "median durable append (ms)", Target: Target{AtMost, 2}}
	socket := &Row{Item: "4b", Figure: "?wait= over the unix socket sees completion", Unit: "ms",
		Baseline: "median durable append (ms)", Target: Target{AtMost, 2},
		Note: "4a/4b: from the start of the append that completes the flow to the waiter holding the result; a 2 s poll loop would add 1 s on average"}
	for run := range b.Runs {
		for _, r := range []*Row{inproc, socket} {
			dir, done, err := b.tempDir()
			if err != nil {
				return nil, err
			}
			wake, appendLat, err := b.wakeRun(ctx, dir, r == socket)
			done()
			if err != nil {
				return nil, fmt.Errorf("item %s, run %d: %w", r.Item, run+1, err)
			}
			r.Add(wake*1000, appendLat*1000)
			b.logf("item %s run %d/%d: wake-up %.2f ms, median append %.2f ms", r.Item, run+1, b.Runs, wake*1000, appendLat*1000)
		}
	}
	return []*Row{inproc, socket}, nil
}

// wakeRun returns the median wake-up latency and the median append
// latency, in seconds, of one run. The waiter calls engine.Wait, or with
// viaSocket long-polls flowd's API server over a unix socket.
func (b *Bench) wakeRun(ctx context.Context, dir string, viaSocket bool) (wake, appendLat float64, err error) {
	log, err := openLog(filepath.Join(dir, "flowd.db"), false)
	if err != nil {
		return 0, 0, err
	}
	defer log.Close()
	p := &probe{Log: log, timed: true, ended: map[string]time.Time{}}
	e, err := engine.Open(ctx, engineConfig(p, nil))
	if err != nil {
		return 0, 0, err
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	wait := func(ctx context.Context, state string) error {
		f, err := e.Wait(ctx, state)
		if err == nil && f.State != states.Complete {
			err = fmt.Errorf("flow %s ended %s, want complete", states.ShortID(state), f.State)
		}
		return err
	}
	if viaSocket {
		s, err := serveAPI(e)
		if err != nil {
			return 0, 0, err
		}
		defer s.close(s.srv.Shutdown)
		wait = socketWaiter(s)
	}
	var wakes []float64
	for started := 0; started < b.Sizes.WakeFlows; started += wakeInFlight {
		n := min(wakeInFlight, b.Sizes.WakeFlows-started)
		ids := make([]string, n)
		for j := range ids {
			st, err := e.Start(ctx, engine.StartRequest{Provider: providerName, Account: fmt.Sprintf("user-%d", j)})
			if err != nil {
				return 0, 0, fmt.Errorf("start: %w", err)
			}
			ids[j] = st.ID
		}
		woke := make([]time.Time, n)
		errs := make([]error, n)
		var waiters sync.WaitGroup
		for j, id := range ids {
			waiters.Go(func() {
				err := wait(ctx, id)
				woke[j] = time.Now()
				errs[j] = err
			})
		}
		// Let every waiter block in Wait before its flow completes: a
		// Wait that starts late reads a finished flow from the log and
		// is not a wake-up.
		time.Sleep(10 * time.Millisecond)
		err := fanOut(ctx, n, n, func(ctx context.Context, _, j int) error {
			_, err := e.Callback(ctx, engine.CallbackParams{State: ids[j], Code: "bench-code"})
			return err
		})
		waiters.Wait()
		if err != nil {
			return 0, 0, fmt.Errorf("callback: %w", err)
		}
		p.mu.Lock()
		for j, id := range ids {
			if errs[j] != nil {
				p.mu.Unlock()
				return 0, 0, fmt.Errorf("wait: %w", errs[j])
			}
			wakes = append(wakes, woke[j].Sub(p.ended[id]).Seconds())
		}
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return median(wakes), median(p.lat), nil
}
