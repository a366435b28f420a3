package engine

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/flowdhq/flowd/states"
)

// Cancel ends a live flow error(canceled). A flow mid-exchange cannot be
// canceled (*FlowError wrapping ErrExchangeInProgress); a finished one
// gives a *FlowError wrapping ErrNotAwaiting.
func (e *Engine) Cancel(ctx context.Context, state string) (states.Flow, error) {
	if err := e.enter(); err != nil {
		return states.Flow{}, err
	}
	defer e.inflight.Done()
	lf, err := e.hold(ctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("cancel: read the flow: %w", err)
	}
	if lf == nil {
		f, err := e.finished(ctx, state)
		if err != nil {
			return f, err
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	lf.mu.Lock()
	defer lf.mu.Unlock()
	for attempt := 0; ; attempt++ {
		switch {
		case lf.flow.State.Terminal():
			return lf.flow, &FlowError{Flow: lf.flow, Err: ErrNotAwaiting}
		case lf.flow.Exchanging:
			return lf.flow, &FlowError{Flow: lf.flow, Err: ErrExchangeInProgress}
		}
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{Reason: states.Canceled}), e.dropFlowSecrets(lf))
		if conflict(err) && attempt < conflictRetries {
			continue // another engine advanced the flow: decide on what it became
		}
		if err != nil {
			return f, fmt.Errorf("cancel: %w", err)
		}
		return f, nil
	}
}

// finished reads a flow that is not live from the log.
func (e *Engine) finished(ctx context.Context, state string) (states.Flow, error) {
	history, err := e.log.History(ctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("read history of %s: %w", states.ShortID(state), err)
	}
	if len(history) == 0 {
		return states.Flow{}, fmt.Errorf("flow %s: %w", states.ShortID(state), ErrUnknownState)
	}
	return states.Fold(history)
}

// Status returns a flow as it stands.
func (e *Engine) Status(ctx context.Context, state string) (states.Flow, error) {
	if lf := e.lookup(state); lf != nil {
		lf.mu.Lock()
		f := lf.flow
		lf.mu.Unlock()
		return f, nil
	}
	return e.finished(ctx, state)
}

// Wait returns the flow as soon as it is terminal, woken by the commit
// that ended it. If ctx ends first it returns the flow as it stands and
// ctx's error.
//
// A flow that has already finished is returned even when ctx is done: the
// answer is known, and reading it is a short read (made without ctx's
// cancellation, as a done context would fail it on the bbolt log).
func (e *Engine) Wait(ctx context.Context, state string) (states.Flow, error) {
	rctx := context.WithoutCancel(ctx)
	lf, err := e.hold(rctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("wait for %s: %w", states.ShortID(state), err)
	}
	if lf != nil {
		// A select with several cases ready picks one at random: a flow
		// already done must win over a context already done.
		select {
		case <-lf.done:
		default:
			select {
			case <-lf.done:
			case <-ctx.Done():
				f, _ := e.Status(rctx, state)
				return f, ctx.Err()
			case <-e.closing:
				f, _ := e.Status(rctx, state)
				return f, ErrClosed
			}
		}
		lf.mu.Lock()
		f := lf.flow
		lf.mu.Unlock()
		return f, nil
	}
	return e.finished(rctx, state)
}

// History returns a flow's records in order.
func (e *Engine) History(ctx context.Context, state string) ([]states.Record, error) {
	h, err := e.log.History(ctx, state)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", states.ShortID(state), err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("history of %s: %w", states.ShortID(state), ErrUnknownState)
	}
	return h, nil
}

// List returns the flows matching f, newest first. Live flows come from
// memory; asking for finished flows reads the whole log.
func (e *Engine) List(ctx context.Context, f Filter) ([]states.Flow, error) {
	match := func(fl states.Flow) bool {
		return (len(f.States) == 0 || slices.Contains(f.States, fl.State)) && (f.Provider == "" || f.Provider == fl.Provider)
	}
	liveOnly := len(f.States) > 0
	for _, s := range f.States {
		liveOnly = liveOnly && s.Live()
	}
	var out []states.Flow
	if liveOnly {
		e.mu.Lock()
		lfs := make([]*liveFlow, 0, len(e.live))
		for _, lf := range e.live {
			lfs = append(lfs, lf)
		}
		e.mu.Unlock()
		for _, lf := range lfs {
			lf.mu.Lock()
			fl := lf.flow
			lf.mu.Unlock()
			if match(fl) {
				out = append(out, fl)
			}
		}
	} else {
		flows := map[string]states.Flow{}
		err := e.log.Scan(ctx, 0, func(rec states.Record) error {
			fl, err := flows[rec.Flow].Apply(rec)
			if err != nil {
				return err
			}
			flows[rec.Flow] = fl
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list flows: %w", err)
		}
		for _, fl := range flows {
			if match(fl) {
				out = append(out, fl)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
