package crashtest

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

// ack is everything flowd's responses acknowledged about one flow. Each
// field stands for records that must be in the flow's history from the
// moment the response was sent, whatever happens to flowd afterwards.
type ack struct {
	// started: a 201 to POST /v1/flows (created and url_issued).
	started  bool
	deadline time.Time
	// terminal: some response said the flow had ended. state and reason
	// are what it said, when it said it ("" when the response did not
	// tell, e.g. a 404 flow_finished).
	terminal bool
	state    states.State
	reason   states.Reason
	// notExpired: a 404 flow_finished says ended, and not by expiry.
	notExpired bool
	// exchanged: the response carried an exchange's outcome, so
	// exchange_started was recorded before it.
	exchanged bool
	// ignored counts responses that reported a callback recorded as
	// callback_ignored (409 exchange_in_progress, 404 flow_finished).
	ignored int
	// contradictions are responses that disagreed with earlier ones.
	contradictions []string
}

// transitions is how many records the acknowledgements stand for.
func (a *ack) transitions() int {
	n := a.ignored
	if a.started {
		n += 2
	}
	if a.terminal {
		n++
	}
	if a.exchanged {
		n++
	}
	return n
}

// ledger records acknowledgements as responses arrive.
type ledger struct {
	mu    sync.Mutex
	flows map[string]*ack
	// touched are the flows acknowledged since the last check.
	touched map[string]bool
}

func newLedger() *ledger {
	return &ledger{flows: map[string]*ack{}, touched: map[string]bool{}}
}

func (l *ledger) get(id string) *ack {
	a := l.flows[id]
	if a == nil {
		a = &ack{}
		l.flows[id] = a
	}
	l.touched[id] = true
	return a
}

func (l *ledger) start(id string, deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.get(id)
	a.started, a.deadline = true, deadline
}

// end records that a response said the flow is terminal in state with
// reason; either may be "" when the response did not say.
func (l *ledger) end(id string, state states.State, reason states.Reason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.get(id)
	a.terminal = true
	if state != "" {
		if a.state != "" && a.state != state {
			a.contradictions = append(a.contradictions, fmt.Sprintf("said %s, then %s", a.state, state))
		}
		a.state = state
	}
	if reason != "" {
		if a.reason != "" && a.reason != reason {
			a.contradictions = append(a.contradictions, fmt.Sprintf("said reason %s, then %s", a.reason, reason))
		}
		a.reason = reason
	}
}

func (l *ledger) finished(id string) {
	l.end(id, "", "")
	l.mu.Lock()
	l.flows[id].notExpired = true
	l.mu.Unlock()
}

func (l *ledger) exchanged(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.get(id).exchanged = true
}

func (l *ledger) ignoredOne(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.get(id).ignored++
}

// takeTouched returns the flows acknowledged since the last call.
func (l *ledger) takeTouched() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.touched))
	for id := range l.touched {
		out = append(out, id)
	}
	l.touched = map[string]bool{}
	sort.Strings(out)
	return out
}

// all returns a copy of every flow's acknowledgements.
func (l *ledger) all() map[string]ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]ack, len(l.flows))
	for id, a := range l.flows {
		out[id] = *a
	}
	return out
}

func (l *ledger) one(id string) (ack, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.flows[id]
	if !ok {
		return ack{}, false
	}
	return *a, true
}

// seen is a flow as the log has it.
type seen struct {
	exists     bool
	state      states.State
	reason     states.Reason
	ignored    int
	exchanging bool
	deadline   time.Time
}

func seenFlow(f states.Flow) seen {
	return seen{exists: true, state: f.State, reason: f.Reason, ignored: f.IgnoredCallbacks, exchanging: f.Exchanging, deadline: f.Deadline}
}

// lost compares what was acknowledged with what the log holds and returns
// how many acknowledged transitions are missing, and why.
func lost(a ack, s seen) (int, []string) {
	if !s.exists {
		if n := a.transitions(); n > 0 {
			return n, []string{fmt.Sprintf("flow missing from the log; %d acknowledged transitions", n)}
		}
		return 0, nil
	}
	n := 0
	var why []string
	if a.terminal {
		switch {
		case !s.state.Terminal():
			why = append(why, fmt.Sprintf("acknowledged as ended (%s %s) but the log has it %s", a.state, a.reason, s.state))
		case a.state != "" && a.state != s.state:
			why = append(why, fmt.Sprintf("acknowledged as %s but the log has %s", a.state, s.state))
		case a.reason != "" && a.reason != s.reason:
			why = append(why, fmt.Sprintf("acknowledged reason %s but the log has %s", a.reason, s.reason))
		case a.notExpired && s.state == states.Expired:
			why = append(why, "acknowledged as finished (not expired) but the log has it expired")
		}
		if len(why) > 0 {
			n++
		}
	}
	if a.exchanged && s.reason != states.Exchanged && s.reason != states.ExchangeFailed {
		n++
		why = append(why, fmt.Sprintf("an exchange outcome was acknowledged but the log ends %s(%s)", s.state, s.reason))
	}
	if a.ignored > s.ignored {
		n += a.ignored - s.ignored
		why = append(why, fmt.Sprintf("%d ignored callbacks acknowledged, %d in the log", a.ignored, s.ignored))
	}
	for _, c := range a.contradictions {
		why = append(why, "responses contradict each other: "+c)
	}
	return n, why
}

func seenWire(f wire.Flow) seen {
	return seen{exists: true, state: states.State(f.Status), reason: states.Reason(f.Reason), ignored: f.IgnoredCallbacks, exchanging: f.Exchanging, deadline: f.ExpiresAt}
}

// The checks themselves must catch what they look for, or a zero proves nothing.
func TestLedgerCountsLostTransitions(t *testing.T) {
	a := ack{started: true, terminal: true, state: states.Complete, reason: states.Exchanged, exchanged: true, ignored: 2}
	n, _ := lost(a, seen{})
	assert.Equal(t, 6, n, "a missing flow loses everything acknowledged about it")
	n, _ = lost(a, seen{exists: true, state: states.AwaitingCallback})
	assert.Equal(t, 4, n, "ended, exchange and two ignored callbacks lost; created and url_issued are there")
	n, _ = lost(a, seen{exists: true, state: states.Complete, reason: states.Exchanged, ignored: 2})
	assert.Zero(t, n)
	n, _ = lost(ack{terminal: true, notExpired: true}, seen{exists: true, state: states.Expired, reason: states.DeadlineExpired})
	assert.Equal(t, 1, n, "flow_finished then expired")
}

func TestFindSecrets(t *testing.T) {
	secrets := map[string]bool{"c-0123456789abcdef": true, "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF": true}
	assert.Len(t, findSecrets("x\x00c-0123456789abcdef\x00", secrets), 1)
	assert.Len(t, findSecrets("AAZm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmFAA", secrets), 1, "a verifier run into its neighbours")
	assert.Empty(t, findSecrets("c-0123456789abcdeX hmac:0123", secrets))
}
