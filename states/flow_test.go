package states

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// guardAllows is the spec of the rules the table cannot express, written out
// independently of flow.go: an exchange runs at most once per flow, only an
// exchange decides a flow that is exchanging, and a callback is ignored only
// while an exchange is under way or once the flow has ended.
func guardAllows(p position, e Event, variant string) bool {
	switch e {
	case ExchangeStarted:
		return !p.Exchanging
	case ExchangeSucceeded:
		return p.Exchanging
	case Failed, DeadlinePassed:
		// Identity is established after the code is exchanged, so its
		// failures end an exchange too.
		byExchange := Reason(variant) == ExchangeFailed || Reason(variant) == ExchangeInterrupted ||
			Reason(variant) == IdentityInvalid || Reason(variant) == AccountMismatch
		return byExchange == p.Exchanging
	case RefreshStarted, Revoked, Disconnected:
		// Every reachable complete flow stored a token and holds it.
		return true
	case TokenRefreshed, RefreshFailed:
		// Reachable flows have no refresh under way: an outcome needs its
		// refresh_started (TestConnection* cover the rest).
		return false
	case CallbackIgnored:
		switch Ignored(variant) {
		case IgnoredInProgress:
			return p.Exchanging
		case IgnoredFinished:
			return p.State.Terminal()
		case IgnoredBindingMissing, IgnoredBindingMismatch:
			return p.State == AwaitingCallback && p.Bound && !p.Exchanging
		}
		return false
	case DeviceAuthorized, PollSlowed:
		return false // these positions are of a loopback flow; device flows: TestApplyDeviceFlow
	case BrowserBound:
		return !p.Bound && !p.Exchanging
	}
	return true
}

// Every position a flow can reach, times every event, times every reason or
// kind the event may carry, goes through Apply. It is legal exactly when
// the table has the row and the guards allow it; otherwise it is an illegal
// transition, the flow is unchanged, and the error names the record.
func TestApplyEveryPair(t *testing.T) {
	pos := reachable(t)
	require.Len(t, pos, 1+len(AllStates)+3, "the new pseudo-state, the five states, and awaiting_callback while exchanging, bound, and both")
	keys := make([]position, 0, len(pos))
	for p := range pos {
		keys = append(keys, p)
	}
	slices.SortFunc(keys, func(a, b position) int {
		if a.String() < b.String() {
			return -1
		}
		return 1
	})
	legal := 0
	for _, p := range keys {
		f := pos[p]
		for _, e := range AllEvents {
			for _, v := range variants(e) {
				name := fmt.Sprintf("%s/%s", p, e)
				if v != "" {
					name += "(" + v + ")"
				}
				t.Run(name, func(t *testing.T) {
					want, inTable := tableNext(p.State, e)
					ok := inTable && guardAllows(p, e, v)
					r := rec(f, e, targetOf(p.State, e), dataFor(e, v))
					if inTable {
						r.To = want
					}
					g, err := f.Apply(r)
					if ok {
						legal++
						require.NoError(t, err)
						assert.Equal(t, want, g.State)
						assert.Equal(t, r.FlowSeq, g.LastSeq)
						assert.Equal(t, e == ExchangeStarted || (p.Exchanging && e == CallbackIgnored), g.Exchanging)
						if want.Terminal() && !p.State.Terminal() {
							assert.Equal(t, Reason(v), g.Reason)
							assert.Equal(t, r.Time, g.Ended)
						}
						return
					}
					requireOnly(t, err, ErrIllegalTransition)
					assert.Equal(t, f, g, "a refused record leaves the flow as it was")
					var re *RecordError
					require.ErrorAs(t, err, &re)
					assert.Equal(t, r.Seq, re.Seq)
					assert.Equal(t, testFlow, re.Flow)
					assert.Equal(t, r.FlowSeq, re.FlowSeq)
					assert.Contains(t, err.Error(), fmt.Sprintf("flow_seq=%d", r.FlowSeq))
				})
			}
		}
	}
	assert.Positive(t, legal)
}

// A record that claims a different target than the table gives is refused
// even when the event is legal from where the flow stands.
func TestApplyWrongTarget(t *testing.T) {
	pos := reachable(t)
	for p, f := range pos {
		for _, e := range AllEvents {
			for _, v := range variants(e) {
				want, ok := tableNext(p.State, e)
				if !ok || !guardAllows(p, e, v) {
					continue
				}
				for _, to := range AllStates {
					if to == want {
						continue
					}
					_, err := f.Apply(rec(f, e, to, dataFor(e, v)))
					requireOnly(t, err, ErrIllegalTransition)
					assert.Contains(t, err.Error(), "record says "+string(to), "%s/%s to %s", p, e, to)
				}
			}
		}
	}
}

func TestApplyGuards(t *testing.T) {
	h := happy(testFlow, 1, t0)
	pending := mustFold(t, h[:1]...)
	awaiting := mustFold(t, h[:2]...)
	exchanging := mustFold(t, h[:3]...)
	complete := mustFold(t, h...)

	cases := []struct {
		name string
		f    Flow
		e    Event
		to   State
		d    Data
		want error
		says string
	}{
		{"exchange_succeeded without exchange_started", awaiting, ExchangeSucceeded, Complete, dataFor(ExchangeSucceeded, "exchanged"), ErrIllegalTransition, "without exchange_started"},
		{"exchange_started twice", exchanging, ExchangeStarted, AwaitingCallback, dataFor(ExchangeStarted, ""), ErrIllegalTransition, "exchange_started twice"},
		{"provider_denied while exchanging", exchanging, Failed, Error, dataFor(Failed, "provider_denied"), ErrIllegalTransition, "while an exchange is under way"},
		{"canceled while exchanging", exchanging, Failed, Error, dataFor(Failed, "canceled"), ErrIllegalTransition, "while an exchange is under way"},
		{"expired while exchanging", exchanging, DeadlinePassed, Expired, dataFor(DeadlinePassed, "expired"), ErrIllegalTransition, "while an exchange is under way"},
		{"exchange_failed without exchange", awaiting, Failed, Error, dataFor(Failed, "exchange_failed"), ErrIllegalTransition, "without exchange_started"},
		{"exchange_interrupted without exchange", awaiting, Failed, Error, dataFor(Failed, "exchange_interrupted"), ErrIllegalTransition, "without exchange_started"},
		{"exchange_failed from pending", pending, Failed, Error, dataFor(Failed, "exchange_failed"), ErrIllegalTransition, "without exchange_started"},
		{"ignored in progress without exchange", awaiting, CallbackIgnored, AwaitingCallback, Data{Ignored: IgnoredInProgress}, ErrIllegalTransition, "without an exchange under way"},
		{"ignored as finished while exchanging", exchanging, CallbackIgnored, AwaitingCallback, Data{Ignored: IgnoredFinished}, ErrIllegalTransition, "while the flow is awaiting_callback"},
		{"ignored in progress after completion", complete, CallbackIgnored, Complete, Data{Ignored: IgnoredInProgress}, ErrIllegalTransition, "without an exchange under way"},

		{"failed with an expiry reason", awaiting, Failed, Error, Data{Reason: DeadlineExpired}, ErrBadReason, `reason "expired"`},
		{"failed without a reason", awaiting, Failed, Error, Data{}, ErrBadReason, `reason ""`},
		{"failed with an unknown reason while exchanging", exchanging, Failed, Error, Data{Reason: "gremlins"}, ErrBadReason, `reason "gremlins"`},
		{"deadline_passed canceled", awaiting, DeadlinePassed, Expired, Data{Reason: Canceled}, ErrBadReason, `reason "canceled"`},
		{"exchange_succeeded without reason", exchanging, ExchangeSucceeded, Complete, Data{TokenStored: true}, ErrBadReason, "exchange_succeeded"},
		{"url_issued with a reason", pending, URLIssued, AwaitingCallback, Data{Reason: Canceled}, ErrBadReason, "carries reason"},
		{"exchange_started with a reason", awaiting, ExchangeStarted, AwaitingCallback, Data{Reason: ExchangeFailed}, ErrBadReason, "carries reason"},
		{"callback_ignored without kind", complete, CallbackIgnored, Complete, Data{}, ErrBadReason, `ignored=""`},
		{"callback_ignored unknown kind", complete, CallbackIgnored, Complete, Data{Ignored: "bored"}, ErrBadReason, `ignored="bored"`},
		{"callback_ignored with a reason", complete, CallbackIgnored, Complete, Data{Ignored: IgnoredFinished, Reason: Canceled}, ErrBadReason, "carries reason"},

		{"unknown event", awaiting, "exchange_retried", AwaitingCallback, Data{}, ErrUnknownEvent, `"exchange_retried"`},
		{"empty event", awaiting, "", AwaitingCallback, Data{}, ErrUnknownEvent, `""`},
		{"unknown target state", awaiting, URLIssued, "paused", Data{}, ErrUnknownState, `"paused" in to`},
		{"empty target state", pending, URLIssued, "", Data{}, ErrUnknownState, `"" in to`},
		{"terminal event from terminal state", complete, Failed, Error, dataFor(Failed, "canceled"), ErrIllegalTransition, "failed from complete"},
		{"url_issued twice", awaiting, URLIssued, AwaitingCallback, Data{}, ErrIllegalTransition, "url_issued from awaiting_callback"},
		{"created twice", pending, Created, Pending, dataFor(Created, ""), ErrIllegalTransition, "created from pending"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.f.Apply(rec(c.f, c.e, c.to, c.d))
			requireOnly(t, err, c.want)
			assert.Contains(t, err.Error(), c.says)
			assert.Equal(t, c.f, g)
		})
	}
}

func TestApplyRecordChecks(t *testing.T) {
	h := happy(testFlow, 1, t0)
	awaiting := mustFold(t, h[:2]...)

	t.Run("missing deadline", func(t *testing.T) {
		r := h[0]
		r.Data.Deadline = nil
		_, err := Flow{}.Apply(r)
		requireOnly(t, err, ErrMissingDeadline)
		assert.Contains(t, err.Error(), "flow_seq=1")
	})
	t.Run("zero deadline", func(t *testing.T) {
		r := h[0]
		r.Data.Deadline = &time.Time{}
		_, err := Flow{}.Apply(r)
		requireOnly(t, err, ErrMissingDeadline)
	})
	t.Run("flow_seq gap", func(t *testing.T) {
		r := h[2]
		r.FlowSeq = 4
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrSequenceGap)
		assert.Contains(t, err.Error(), "flow_seq 4 after 2")
	})
	t.Run("flow_seq going back", func(t *testing.T) {
		r := h[2]
		r.FlowSeq = 1
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrSequenceGap)
	})
	t.Run("first record not numbered 1", func(t *testing.T) {
		r := h[0]
		r.FlowSeq = 0
		_, err := Flow{}.Apply(r)
		requireOnly(t, err, ErrSequenceGap)
	})
	t.Run("flow_seq duplicate", func(t *testing.T) {
		_, err := awaiting.Apply(h[1])
		requireOnly(t, err, ErrDuplicateSequence)
		assert.Contains(t, err.Error(), "flow_seq 2 again")
	})
	t.Run("wrong flow", func(t *testing.T) {
		r := h[2]
		r.Flow = "c29tZW9uZUVsc2VzRmxvdzAw"
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrWrongFlow)
		assert.Contains(t, err.Error(), ShortID(testFlow), "names the flow the record was applied to")
	})
	t.Run("empty flow id", func(t *testing.T) {
		r := h[0]
		r.Flow = ""
		_, err := Flow{}.Apply(r)
		requireOnly(t, err, ErrWrongFlow)
	})
	t.Run("unknown from state", func(t *testing.T) {
		r := h[2]
		r.From = "paused"
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrUnknownState)
		assert.Contains(t, err.Error(), `"paused" in from`)
	})
	t.Run("from disagrees with the flow", func(t *testing.T) {
		r := h[2]
		r.From = Pending
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrIllegalTransition)
		assert.Contains(t, err.Error(), `record says from "pending" but the flow is "awaiting_callback"`)
	})
	t.Run("unknown event wins over a from mismatch", func(t *testing.T) {
		r := h[2]
		r.Event, r.From = "teleported", Complete
		_, err := awaiting.Apply(r)
		requireOnly(t, err, ErrUnknownEvent)
	})
	for _, v := range []int{0, SchemaVersion + 1, -1} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			r := h[0]
			r.Version = v
			_, err := Flow{}.Apply(r)
			requireOnly(t, err, ErrUnsupportedVersion)
		})
	}
}

// What a history adds up to is what inspect and replay show users.
func TestFoldHappyPath(t *testing.T) {
	h := happy(testFlow, 1, t0)
	late := rec(mustFold(t, h...), CallbackIgnored, Complete, Data{Ignored: IgnoredFinished, CodeFingerprint: "fp1:00ff"})
	f := mustFold(t, append(h, late)...)
	assert.Equal(t, Flow{
		ID: testFlow, State: Complete, Reason: Exchanged, LastSeq: 5,
		Provider: "github", Scopes: []string{"repo"}, Transport: Loopback,
		RedirectURI: "http://127.0.0.1:8085/oauth/callback",
		Created:     h[0].Time, Deadline: t0.Add(5 * time.Minute), Ended: h[3].Time,
		GrantedScopes: []string{"repo"}, TokenStored: true, IgnoredCallbacks: 1,
		Conn: &Connection{Flow: testFlow, Provider: "github", Connected: h[3].Time, Scopes: []string{"repo"}, seq: h[3].Seq},
	}, f)
}

func TestFoldEndings(t *testing.T) {
	h := happy(testFlow, 1, t0)
	awaiting := mustFold(t, h[:2]...)
	exchanging := mustFold(t, h[:3]...)

	denied, err := awaiting.Apply(rec(awaiting, Failed, Error, dataFor(Failed, "provider_denied")))
	require.NoError(t, err)
	assert.Equal(t, ProviderDenied, denied.Reason)
	assert.Equal(t, "access_denied", denied.ErrorCode)
	assert.Equal(t, "The user denied the request", denied.Message)
	assert.False(t, denied.TokenStored)

	failed, err := exchanging.Apply(rec(exchanging, Failed, Error, dataFor(Failed, "exchange_failed")))
	require.NoError(t, err)
	assert.Equal(t, 400, failed.HTTPStatus)
	assert.Equal(t, "invalid_grant", failed.ErrorCode)
	assert.False(t, failed.Exchanging, "an exchange's outcome ends the exchange")

	sup, err := awaiting.Apply(rec(awaiting, Failed, Error, dataFor(Failed, "superseded")))
	require.NoError(t, err)
	assert.Equal(t, "bmV3ZXJGbG93MDAwMDAwMDAy", sup.SupersededBy)

	down, err := awaiting.Apply(rec(awaiting, DeadlinePassed, Expired, Data{Reason: ExpiredWhileDown}))
	require.NoError(t, err)
	assert.Equal(t, Expired, down.State)
	assert.Equal(t, ExpiredWhileDown, down.Reason)

	busy, err := exchanging.Apply(rec(exchanging, CallbackIgnored, AwaitingCallback, Data{Ignored: IgnoredInProgress}))
	require.NoError(t, err)
	assert.True(t, busy.Exchanging, "an ignored callback does not end the exchange")
	assert.Equal(t, 1, busy.IgnoredCallbacks)
}

// A flow must not share slices with the records it was built from: the
// engine reuses and hands out both.
func TestApplyCopiesSlices(t *testing.T) {
	h := happy(testFlow, 1, t0)
	f := mustFold(t, h...)
	h[0].Data.Scopes[0] = "admin"
	h[3].Data.GrantedScopes[0] = "admin"
	assert.Equal(t, []string{"repo"}, f.Scopes)
	assert.Equal(t, []string{"repo"}, f.GrantedScopes)
}

func TestFoldStopsAtFirstBadRecord(t *testing.T) {
	h := happy(testFlow, 1, t0)
	h[2].From = Pending
	f, err := Fold(h)
	requireOnly(t, err, ErrIllegalTransition)
	var re *RecordError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, uint64(3), re.FlowSeq)
	assert.Equal(t, AwaitingCallback, f.State, "Fold returns the flow as it stood before the bad record")
	assert.Equal(t, uint64(2), f.LastSeq)
}

func TestFoldEmpty(t *testing.T) {
	f, err := Fold(nil)
	require.NoError(t, err)
	assert.Equal(t, Flow{}, f)
}

// deviceHistory is a device flow that was authorized, slowed down once and
// completed, as the engine records it.
func deviceHistory() []Record {
	dl := t0.Add(15 * time.Minute)
	p1, p2 := t0.Add(5*time.Second), t0.Add(20*time.Second)
	return []Record{
		{Version: SchemaVersion, Seq: 1, Flow: testFlow, FlowSeq: 1, Event: Created, To: Pending, Time: t0,
			Data: Data{Provider: "github", Scopes: []string{"repo"}, Transport: Device, Deadline: &dl}},
		{Version: SchemaVersion, Seq: 2, Flow: testFlow, FlowSeq: 2, Event: DeviceAuthorized, From: Pending, To: AwaitingCallback, Time: t0,
			Data: Data{DevicePolling: &DevicePolling{VerificationURI: "https://github.com/login/device", PollInterval: 5, NextPoll: &p1}}},
		{Version: SchemaVersion, Seq: 3, Flow: testFlow, FlowSeq: 3, Event: PollSlowed, From: AwaitingCallback, To: AwaitingCallback, Time: t0.Add(10 * time.Second),
			Data: Data{ErrorCode: "slow_down", DevicePolling: &DevicePolling{PollInterval: 10, NextPoll: &p2}}},
		{Version: SchemaVersion, Seq: 4, Flow: testFlow, FlowSeq: 4, Event: ExchangeSucceeded, From: AwaitingCallback, To: Complete, Time: t0.Add(20 * time.Second),
			Data: Data{Reason: Exchanged, TokenStored: true}},
	}
}

// A device flow polls instead of redeeming a code: its history folds
// without exchange_started, keeps the interval and next poll, and the
// events of the other transports are refused in it (and its events in
// theirs: TestApplyEveryPair).
func TestApplyDeviceFlow(t *testing.T) {
	h := deviceHistory()
	f, err := Fold(h)
	require.NoError(t, err)
	assert.Equal(t, Complete, f.State)
	assert.Equal(t, 10*time.Second, f.PollInterval)
	assert.Equal(t, "https://github.com/login/device", f.VerificationURI)
	assert.Equal(t, t0.Add(20*time.Second), f.NextPoll)

	authorized, err := Fold(h[:2])
	require.NoError(t, err)
	slowed, err := Fold(h[:3])
	require.NoError(t, err)
	assert.Equal(t, "slow_down", slowed.ErrorCode)
	next := func(f Flow, e Event, d Data) Record {
		return Record{Version: SchemaVersion, Seq: f.LastSeq + 1, Flow: testFlow, FlowSeq: f.LastSeq + 1, Event: e, From: f.State,
			To: targetOf(f.State, e), Time: t0.Add(30 * time.Second), Data: d}
	}
	p := t0.Add(time.Minute)
	refused := map[string]Record{
		"url_issued in a device flow":        next(must(Fold(h[:1])), URLIssued, Data{}),
		"device_authorized without poll":     next(must(Fold(h[:1])), DeviceAuthorized, Data{DevicePolling: &DevicePolling{VerificationURI: "https://x"}}),
		"exchange_started":                   next(authorized, ExchangeStarted, Data{CodeFingerprint: "hmac:1"}),
		"interval that does not grow":        next(slowed, PollSlowed, Data{DevicePolling: &DevicePolling{PollInterval: 10, NextPoll: &p}}),
		"interval that shrinks":              next(slowed, PollSlowed, Data{DevicePolling: &DevicePolling{PollInterval: 5, NextPoll: &p}}),
		"exchange_interrupted (no exchange)": next(authorized, Failed, Data{Reason: ExchangeInterrupted}),
	}
	for name, r := range refused {
		t.Run(name, func(t *testing.T) {
			base := authorized
			if r.FlowSeq == 2 {
				base = must(Fold(h[:1]))
			} else if r.FlowSeq == 4 {
				base = slowed
			}
			g, err := base.Apply(r)
			requireOnly(t, err, ErrIllegalTransition)
			assert.Equal(t, base, g)
		})
	}
	// A poll that fails ends the flow exchange_failed without an exchange_started.
	g, err := authorized.Apply(next(authorized, Failed, Data{Reason: ExchangeFailed, ErrorCode: "invalid_grant", HTTPStatus: 400}))
	require.NoError(t, err)
	assert.Equal(t, Error, g.State)
}

func must(f Flow, err error) Flow {
	if err != nil {
		panic(err)
	}
	return f
}

// Polling resumes on the recorded schedule: at NextPoll, or at the first
// later point of NextPoll + k*interval, never earlier than the schedule.
func TestNextPollAfter(t *testing.T) {
	f, err := Fold(deviceHistory()[:2]) // next poll t0+5s, every 5s
	require.NoError(t, err)
	assert.Equal(t, t0.Add(5*time.Second), f.NextPollAfter(t0))
	assert.Equal(t, t0.Add(5*time.Second), f.NextPollAfter(t0.Add(5*time.Second)))
	assert.Equal(t, t0.Add(10*time.Second), f.NextPollAfter(t0.Add(5*time.Second+time.Nanosecond)))
	assert.Equal(t, t0.Add(65*time.Second), f.NextPollAfter(t0.Add(61*time.Second)))
	loop, err := Fold(deviceHistory()[:1])
	require.NoError(t, err)
	loop.Transport = Loopback
	assert.True(t, loop.NextPollAfter(t0).IsZero())
}

// A flow's account is the one asked for until the exchange names the one
// that signed in; version 1 logs, written before accounts had one name,
// call it principal, and read the same after the upcast to version 2.
func TestFlowAccount(t *testing.T) {
	recs := happy(testFlow, 1, t0)
	recs[0].Data.Account = "work"
	f, err := Fold(recs[:3])
	require.NoError(t, err)
	assert.Equal(t, "work", f.Account, "the account asked for")

	recs[3].Data.Account, recs[3].Data.Subject, recs[3].Data.Email = "octocat", "583231", "octocat@example.com"
	f, err = Fold(recs)
	require.NoError(t, err)
	assert.Equal(t, "octocat", f.Account, "the account that signed in")
	assert.Equal(t, "583231", f.Subject)
	assert.Equal(t, "octocat@example.com", f.Email)

	legacy := happy(testFlow, 1, t0)
	b, err := legacy[0].Encode()
	require.NoError(t, err)
	b = bytes.Replace(b, []byte(`"v":2`), []byte(`"v":1`), 1)
	b = bytes.Replace(b, []byte(`"provider":"github"`), []byte(`"provider":"github","principal":"alice"`), 1)
	legacy[0], err = Decode(b)
	require.NoError(t, err, "%s", b)
	assert.Equal(t, SchemaVersion, legacy[0].Version, "upcast to the current version")
	assert.Equal(t, "alice", legacy[0].Data.Account)
	f, err = Fold(legacy)
	require.NoError(t, err)
	assert.Equal(t, "alice", f.Account, "an old log's principal is the account")
}

// BenchmarkApply folds a connect's four records (created, url_issued,
// exchange_started, exchange_succeeded) through Apply, one record at a
// time as the engine's commit checks each transition; ns/op is per flow.
func BenchmarkApply(b *testing.B) {
	h := happy(testFlow, 1, t0)
	for b.Loop() {
		var f Flow
		for _, rec := range h {
			var err error
			if f, err = f.Apply(rec); err != nil {
				b.Fatal(err)
			}
		}
	}
}
