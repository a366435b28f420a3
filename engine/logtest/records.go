package logtest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/flowdhq/flowd/states"
)

// Base is the time the suite's flows start at. Records carry times as data;
// nothing in the suite reads the clock.
var Base = time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)

// Flow builds one flow's records the way the engine writes them: legal
// transitions with realistic data, contiguous FlowSeq values, and times
// one second apart unless At moves them. Asking it for a record the
// machine forbids from the flow's state panics: that is a bug in the test.
type Flow struct {
	ID         string
	seq        uint64
	state      states.State
	exchanging bool
	at         time.Time
}

// NewFlow returns a builder for a new flow with a random state token, as
// the engine draws them, whose first record happens at at.
func NewFlow(at time.Time) *Flow {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("logtest: draw flow id: %v", err)) // crypto/rand never fails on supported platforms
	}
	return &Flow{ID: base64.RawURLEncoding.EncodeToString(b), at: at}
}

// At sets the time of the next record.
func (f *Flow) At(t time.Time) *Flow { f.at = t; return f }

// Last returns the FlowSeq of the last record built.
func (f *Flow) Last() uint64 { return f.seq }

func (f *Flow) next(ev states.Event, d states.Data) states.Record {
	to, err := states.Next(f.state, ev)
	if err != nil {
		panic(fmt.Sprintf("logtest: builder asked for an illegal record: %v", err))
	}
	f.seq++
	rec := states.Record{
		Version: states.SchemaVersion,
		Flow:    f.ID,
		FlowSeq: f.seq,
		Event:   ev,
		From:    f.state,
		To:      to,
		Time:    f.at,
		Data:    d,
	}
	f.state = to
	f.at = f.at.Add(time.Second)
	return rec
}

// Created opens the flow; its record carries the deadline five minutes on.
func (f *Flow) Created() states.Record {
	deadline := f.at.Add(5 * time.Minute)
	return f.next(states.Created, states.Data{
		Provider:    "github",
		Account:     "octocat@example.com",
		Scopes:      []string{"repo", "read:org"},
		Transport:   states.Loopback,
		RedirectURI: "http://127.0.0.1:8085/oauth/callback",
		Deadline:    &deadline,
	})
}

// URLIssued hands out the authorization URL.
func (f *Flow) URLIssued() states.Record { return f.next(states.URLIssued, states.Data{}) }

// ExchangeStarted records the start of the code exchange.
func (f *Flow) ExchangeStarted() states.Record {
	f.exchanging = true
	return f.next(states.ExchangeStarted, states.Data{CodeFingerprint: "hs256:9f86d081884c7d65"})
}

// Succeeded completes the flow (after ExchangeStarted).
func (f *Flow) Succeeded() states.Record {
	f.exchanging = false
	return f.next(states.ExchangeSucceeded, states.Data{
		Reason:        states.Exchanged,
		GrantedScopes: []string{"repo"},
		TokenStored:   true,
	})
}

// Failed ends the flow in error with reason (not an exchange reason).
func (f *Flow) Failed(reason states.Reason) states.Record {
	d := states.Data{Reason: reason, Message: "ended: " + reason.Describe()}
	if reason == states.ProviderDenied {
		d.ErrorCode = "access_denied"
	}
	return f.next(states.Failed, d)
}

// Expired ends the flow in expired.
func (f *Flow) Expired() states.Record {
	return f.next(states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired})
}

// Ignored records a callback that changed nothing.
func (f *Flow) Ignored() states.Record {
	why := states.IgnoredFinished
	if f.exchanging {
		why = states.IgnoredInProgress
	}
	return f.next(states.CallbackIgnored, states.Data{Ignored: why, CodeFingerprint: "hs256:2c26b46b68ffc68f"})
}

// Complete returns a whole successful flow: created, url_issued,
// exchange_started, exchange_succeeded.
func (f *Flow) Complete() []states.Record {
	return []states.Record{f.Created(), f.URLIssued(), f.ExchangeStarted(), f.Succeeded()}
}

// checkFold fails t unless history is a legal history of one flow: what a
// log returns must replay through the machine.
func checkFold(t *testing.T, history []states.Record) {
	t.Helper()
	if _, err := states.Fold(history); err != nil {
		t.Errorf("history does not replay: %v", err)
	}
}
