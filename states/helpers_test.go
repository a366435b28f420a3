package states

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is an arbitrary instant the test records start at. Tests never compare
// against the wall clock: the package reads none.
var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

const testFlow = "Zk1vY2tTdGF0ZVRva2VuMDAx"

// sentinels is every error Apply, Replay and Decode can return. Each case a
// test provokes must match its own sentinel and no other.
var sentinels = map[string]error{
	"ErrUnknownEvent":       ErrUnknownEvent,
	"ErrUnknownState":       ErrUnknownState,
	"ErrIllegalTransition":  ErrIllegalTransition,
	"ErrMissingDeadline":    ErrMissingDeadline,
	"ErrBadReason":          ErrBadReason,
	"ErrWrongFlow":          ErrWrongFlow,
	"ErrSequenceGap":        ErrSequenceGap,
	"ErrOutOfOrder":         ErrOutOfOrder,
	"ErrDuplicateSequence":  ErrDuplicateSequence,
	"ErrUnsupportedVersion": ErrUnsupportedVersion,
	"ErrUndecodable":        ErrUndecodable,
}

// requireOnly asserts err matches want and none of the other sentinels, so
// a caller branching on errors.Is gets one answer.
func requireOnly(t *testing.T, err, want error) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, want)
	for name, other := range sentinels {
		if other != want {
			require.NotErrorIs(t, err, other, "error %q also matches %s", err, name)
		}
	}
}

// dataFor returns data a well-behaved engine would record for event e with
// the given variant (a reason, an ignored kind, or ""). An event added to the
// table later gets empty data, which is what its row needs unless it adds a
// guard.
func dataFor(e Event, variant string) Data {
	switch e {
	case Created:
		dl := t0.Add(5 * time.Minute)
		return Data{
			Provider:    "github",
			Account:     "alice",
			Scopes:      []string{"repo", "read:user"},
			Transport:   Loopback,
			RedirectURI: "http://127.0.0.1:8085/oauth/callback",
			Deadline:    &dl,
		}
	case ExchangeStarted:
		return Data{CodeFingerprint: "fp1:3f9a1c27d0b4e865"}
	case ExchangeSucceeded:
		return Data{Reason: Reason(variant), GrantedScopes: []string{"repo"}, TokenStored: true}
	case CallbackIgnored:
		return Data{Ignored: Ignored(variant), CodeFingerprint: "fp1:77aa01c2e3f49b10"}
	case BrowserBound:
		return Data{BindingFingerprint: "hmac:5b1c0e9a77d24f3e81a2c4d6"}
	case RefreshStarted:
		return Data{TokenEvents: &TokenEvents{RefreshFP: "hmac:0123456789abcdef01234567"}}
	case TokenRefreshed:
		te := t0.Add(2 * time.Hour)
		return Data{TokenEvents: &TokenEvents{TokenExpiry: &te}}
	case RefreshFailed:
		return Data{ErrorCode: "invalid_grant", HTTPStatus: 400}
	case Revoked:
		return Data{}
	case Disconnected:
		return Data{TokenEvents: &TokenEvents{Revocation: Revocation(variant)}}
	}
	d := Data{Reason: Reason(variant)}
	switch Reason(variant) {
	case ExchangeFailed:
		d.HTTPStatus, d.ErrorCode, d.Message = 400, "invalid_grant", "code already redeemed"
	case ProviderDenied:
		d.ErrorCode, d.Message = "access_denied", "The user denied the request"
	case Superseded:
		d.SupersededBy = "bmV3ZXJGbG93MDAwMDAwMDAy"
	}
	return d
}

// variants lists the data variants worth trying for e: each reason a
// terminal event may carry, each kind of ignored callback, or just "".
func variants(e Event) []string {
	if rs := reasonsOf[e]; rs != nil {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = string(r)
		}
		return out
	}
	if e == CallbackIgnored {
		return []string{string(IgnoredInProgress), string(IgnoredFinished), string(IgnoredBindingMissing), string(IgnoredBindingMismatch)}
	}
	if e == Disconnected {
		return []string{string(RevocationDone), string(RevocationUnsupported), string(RevocationFailed)}
	}
	return []string{""}
}

// tableNext reads Table directly, not through looplab/fsm, so the tests of
// Next and Apply are checked against the table rather than against
// themselves. from is "" for a flow that does not exist yet.
func tableNext(from State, e Event) (State, bool) {
	for _, row := range Table {
		if row.Event != e {
			continue
		}
		if len(row.From) == 0 {
			if from == "" {
				return row.To, true
			}
			continue
		}
		if slices.Contains(row.From, from) {
			if row.To == "" {
				return from, true
			}
			return row.To, true
		}
	}
	return "", false
}

// targetOf is the state a record of e from from claims to lead to: the
// table's target when the row exists, so an illegal record is wrong only in
// the (from, event) pair under test.
func targetOf(from State, e Event) State {
	for _, row := range Table {
		if row.Event == e && row.To != "" {
			return row.To
		}
	}
	if from.Valid() {
		return from
	}
	return Pending
}

// rec builds the record of event e that would follow f.
func rec(f Flow, e Event, to State, d Data) Record {
	return Record{
		Version: SchemaVersion,
		Seq:     f.LastSeq + 1,
		Flow:    testFlow,
		FlowSeq: f.LastSeq + 1,
		Event:   e,
		From:    f.State,
		To:      to,
		Time:    t0.Add(time.Duration(f.LastSeq+1) * time.Second),
		Data:    d,
	}
}

// position is where a flow can stand as far as the checks are concerned:
// its state, whether an exchange is under way, and whether a flow still
// waiting for its callback is bound to a browser.
type position struct {
	State      State
	Exchanging bool
	Bound      bool
}

func positionOf(f Flow) position {
	return position{f.State, f.Exchanging, f.Bound() && f.State == AwaitingCallback}
}

func (p position) String() string {
	if p.State == "" {
		return "(new)"
	}
	s := string(p.State)
	if p.Bound {
		s += "+bound"
	}
	if p.Exchanging {
		s += "+exchanging"
	}
	return s
}

// reachable explores the machine from a new flow, trying every event and
// variant through Apply, and returns one flow standing at each position it
// reaches. It is derived from Table and AllEvents, so a new row or state is
// explored without touching the tests.
func reachable(t *testing.T) map[position]Flow {
	t.Helper()
	seen := map[position]Flow{{}: {}}
	queue := []Flow{{}}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		for _, e := range AllEvents {
			for _, v := range variants(e) {
				to, ok := tableNext(f.State, e)
				if !ok {
					continue
				}
				g, err := f.Apply(rec(f, e, to, dataFor(e, v)))
				if err != nil {
					continue
				}
				p := positionOf(g)
				if _, ok := seen[p]; !ok {
					seen[p] = g
					queue = append(queue, g)
				}
			}
		}
	}
	return seen
}

// mustFold folds records that must be legal.
func mustFold(t *testing.T, recs ...Record) Flow {
	t.Helper()
	f, err := Fold(recs)
	require.NoError(t, err)
	return f
}

// happy returns the records of a flow that completes, numbered from seq.
func happy(flow string, seq uint64, at time.Time) []Record {
	dl := at.Add(5 * time.Minute)
	mk := func(i uint64, e Event, from, to State, d Data) Record {
		return Record{Version: SchemaVersion, Seq: seq + i - 1, Flow: flow, FlowSeq: i, Event: e, From: from, To: to,
			Time: at.Add(time.Duration(i) * time.Second), Data: d}
	}
	return []Record{
		mk(1, Created, "", Pending, Data{Provider: "github", Scopes: []string{"repo"}, Transport: Loopback,
			RedirectURI: "http://127.0.0.1:8085/oauth/callback", Deadline: &dl}),
		mk(2, URLIssued, Pending, AwaitingCallback, Data{}),
		mk(3, ExchangeStarted, AwaitingCallback, AwaitingCallback, Data{CodeFingerprint: "fp1:00ff"}),
		mk(4, ExchangeSucceeded, AwaitingCallback, Complete, Data{Reason: Exchanged, GrantedScopes: []string{"repo"}, TokenStored: true}),
	}
}

func TestSentinelsAreDistinct(t *testing.T) {
	msgs := map[string]string{}
	for name, err := range sentinels {
		for other, err2 := range sentinels {
			if name != other {
				require.False(t, errors.Is(err, err2), "%s wraps %s", name, other)
			}
		}
		if prev, dup := msgs[err.Error()]; dup {
			t.Errorf("%s and %s have the same message %q", name, prev, err.Error())
		}
		msgs[err.Error()] = name
	}
}
