package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/flowdhq/flowd/states"
)

// record builds the next record of lf. The caller holds lf.mu.
func (e *Engine) record(lf *liveFlow, ev states.Event, d states.Data) []states.Record {
	to, err := states.Next(lf.flow.State, ev)
	if err != nil {
		to = "" // commit's Apply rejects it with the machine's own error
	}
	return []states.Record{{
		Version: states.SchemaVersion,
		Flow:    lf.flow.ID,
		FlowSeq: lf.flow.LastSeq + 1,
		Event:   ev,
		From:    lf.flow.State,
		To:      to,
		Time:    e.clock.Now().UTC(),
		Data:    d,
	}}
}

// dropFlowSecrets deletes the secrets sealed with lf's first records:
// its PKCE verifier, its nonce if it sent one and its per-start client if
// it had one, or a device flow's codes (and client, sealed with them).
func (e *Engine) dropFlowSecrets(lf *liveFlow) map[string][]byte {
	if lf.flow.Transport == states.Device {
		return map[string][]byte{deviceKeyPrefix + lf.flow.ID: nil}
	}
	drop := map[string][]byte{verifierKeyPrefix + lf.flow.ID: nil}
	if lf.flow.NonceFingerprint != "" {
		drop[nonceKeyPrefix+lf.flow.ID] = nil
	}
	if lf.perStart {
		drop[flowClientPrefix+lf.flow.ID] = nil
	}
	return drop
}

// commit checks recs against the machine, appends them durably, and only
// then advances lf. The caller holds lf.mu. On error lf is unchanged.
func (e *Engine) commit(ctx context.Context, lf *liveFlow, recs []states.Record, secrets map[string][]byte) (states.Flow, error) {
	next := lf.flow
	for i := range recs {
		// In place, by pointer: Apply would copy the Flow and the record in
		// and the Flow out, for every record of every transition.
		if err := next.Advance(&recs[i]); err != nil {
			return lf.flow, fmt.Errorf("flow %s: %w", states.ShortID(lf.flow.ID), err)
		}
	}
	begin := time.Now()
	err := e.log.Append(ctx, recs, secrets)
	if e.hooks.Append != nil {
		e.hooks.Append(time.Since(begin), err)
	}
	if err != nil {
		if conflict(err) && lf.flow.ID != "" {
			// Another engine on a shared log advanced the flow: re-read
			// it, so the caller can decide again on what it became.
			e.refresh(ctx, lf)
		}
		return lf.flow, fmt.Errorf("append %s to flow %s: %w", recs[len(recs)-1].Event, states.ShortID(recs[0].Flow), err)
	}
	lf.flow = next
	noteRecords(lf, recs)
	e.conns.committed(next, recs)
	if next.State.Terminal() && lf.done != nil {
		e.retire(lf)
	}
	if e.hooks.Transition != nil {
		for _, rec := range recs {
			e.hooks.Transition(rec, next)
		}
	}
	return next, nil
}

// adopt makes lf live and arms its deadline, and returns its birth number.
// Once adopted, lf.flow may change under lf.mu at any time.
func (e *Engine) adopt(lf *liveFlow) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.adoptLocked(lf)
}

// adoptLocked is adopt with e.mu held.
func (e *Engine) adoptLocked(lf *liveFlow) uint64 {
	delete(e.starting, lf.flow.ID)
	e.live[lf.flow.ID] = lf
	// The owner is the account the flow was started for: a complete
	// flow's record may name the account that signed in instead.
	lf.owner = lf.flow.Account
	k := ownerKey{lf.flow.Provider, lf.owner}
	if e.owners[k] == nil {
		e.owners[k] = map[string]*liveFlow{}
	}
	e.owners[k][lf.flow.ID] = lf
	e.schedule(lf, e.wakeFor(lf))
	return lf.born
}

// retire removes a flow that became terminal and wakes its waiters. The
// caller holds lf.mu.
func (e *Engine) retire(lf *liveFlow) {
	lf.verifier, lf.nonce = "", ""
	e.releasePoll(lf)
	e.mu.Lock()
	if e.live[lf.flow.ID] == lf {
		delete(e.live, lf.flow.ID)
		k := ownerKey{lf.flow.Provider, lf.owner}
		delete(e.owners[k], lf.flow.ID)
		if len(e.owners[k]) == 0 {
			delete(e.owners, k)
		}
		e.unschedule(lf)
	}
	e.mu.Unlock()
	select {
	case <-lf.done:
	default:
		close(lf.done)
	}
}

func (e *Engine) lookup(state string) *liveFlow {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.live[state]
}
