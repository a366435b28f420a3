package states

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every (state, event) pair, the pseudo-state of a new flow included, goes
// through Next and must agree with Table read directly: legal pairs lead
// where the row says, every other pair is an illegal transition.
func TestNextEveryPair(t *testing.T) {
	froms := append([]State{""}, AllStates...)
	for _, from := range froms {
		for _, e := range AllEvents {
			name := fmt.Sprintf("%s/%s", position{State: from}, e)
			t.Run(name, func(t *testing.T) {
				want, legal := tableNext(from, e)
				got, err := Next(from, e)
				if legal {
					require.NoError(t, err)
					assert.Equal(t, want, got)
					return
				}
				requireOnly(t, err, ErrIllegalTransition)
				assert.Contains(t, err.Error(), string(e), "the error names the event")
			})
		}
	}
}

func TestNextUnknownNames(t *testing.T) {
	_, err := Next("paused", URLIssued)
	requireOnly(t, err, ErrUnknownState)
	assert.Contains(t, err.Error(), `"paused"`)

	_, err = Next(Pending, "url_reissued")
	requireOnly(t, err, ErrUnknownEvent)
	assert.Contains(t, err.Error(), `"url_reissued"`)

	_, err = Next(Pending, "")
	requireOnly(t, err, ErrUnknownEvent)
}

// Next shares pooled fsm instances between goroutines; under -race this
// shows a pooled instance never carries one caller's state into another's.
func TestNextConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				from := AllStates[(i+j)%len(AllStates)]
				for _, e := range AllEvents {
					want, legal := tableNext(from, e)
					got, err := Next(from, e)
					if legal != (err == nil) || (legal && got != want) {
						t.Errorf("Next(%s, %s) = %q, %v; table says %q, %v", from, e, got, err, want, legal)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// The shape the rest of flowd relies on: five states, three terminal; the
// terminal ones are left by nothing but an ignored callback; every state is
// reachable from a new flow; every event has a row.
func TestTableShape(t *testing.T) {
	assert.Equal(t, []State{Pending, AwaitingCallback, Complete, Error, Expired}, AllStates)
	for _, s := range AllStates {
		assert.True(t, s.Valid())
		assert.Equal(t, !s.Terminal(), s.Live(), "%s is either live or terminal", s)
		if !s.Terminal() {
			continue
		}
		for _, e := range AllEvents {
			if to, ok := tableNext(s, e); ok {
				assert.True(t, e == CallbackIgnored || s == Complete && e.TokenEvent(), "terminal %s must be left only by callback_ignored (or, complete, by a token event): %s", s, e)
				assert.Equal(t, s, to, "%s must not move terminal %s", e, s)
			}
		}
	}
	assert.False(t, State("").Valid())
	assert.False(t, State("").Live())
	assert.False(t, State("Pending").Valid(), "state names are case-sensitive")

	seen := map[Event]bool{}
	for _, row := range Table {
		assert.False(t, seen[row.Event], "event %s has two rows: one row per event keeps the table readable", row.Event)
		seen[row.Event] = true
		assert.True(t, row.Event.Valid())
		for _, s := range row.From {
			assert.True(t, s.Valid(), "row %s leaves unknown state %q", row.Event, s)
		}
		if row.To != "" {
			assert.True(t, row.To.Valid(), "row %s leads to unknown state %q", row.Event, row.To)
		}
	}
	assert.Len(t, AllEvents, len(Table))

	pos := reachable(t)
	for _, s := range AllStates {
		_, plain := pos[position{State: s}]
		_, exch := pos[position{State: s, Exchanging: true}]
		assert.True(t, plain || exch, "state %s is unreachable from a new flow", s)
	}
}

// Each terminal event lists the reasons it may carry; every reason the
// package declares is carried by exactly one event and reads as a sentence.
func TestReasons(t *testing.T) {
	all := []Reason{ProviderDenied, ExchangeFailed, ExchangeInterrupted, InvalidCallback, Canceled, Superseded,
		DeadlineExpired, ExpiredWhileDown, Exchanged, IdentityInvalid, AccountMismatch}
	for _, r := range all {
		n := 0
		for _, e := range AllEvents {
			for _, got := range ReasonsOf(e) {
				if got == r {
					n++
				}
			}
		}
		assert.Equal(t, 1, n, "reason %s belongs to exactly one event", r)
		assert.NotEqual(t, string(r), r.Describe(), "reason %s needs a sentence for users", r)
	}
	assert.Equal(t, "mystery", Reason("mystery").Describe(), "an unknown reason is shown as is")
	assert.Nil(t, ReasonsOf(URLIssued))

	rs := ReasonsOf(Failed)
	rs[0] = "tampered"
	assert.NotEqual(t, Reason("tampered"), ReasonsOf(Failed)[0], "ReasonsOf returns a copy")
}

func TestTransportValid(t *testing.T) {
	for _, tr := range []Transport{Loopback, Gateway, Manual} {
		assert.True(t, tr.Valid())
	}
	assert.False(t, Transport("carrier_pigeon").Valid())
	assert.False(t, Transport("").Valid())
}

// BenchmarkNext runs a transition and a self-loop through the table
// the fsm computed: the engine does so twice per record it appends.
func BenchmarkNext(b *testing.B) {
	for _, c := range []struct {
		from State
		ev   Event
	}{{AwaitingCallback, ExchangeSucceeded}, {AwaitingCallback, ExchangeStarted}} {
		b.Run(string(c.ev), func(b *testing.B) {
			for b.Loop() {
				if _, err := Next(c.from, c.ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
