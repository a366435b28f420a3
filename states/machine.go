package states

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/looplab/fsm"
)

// State is where a flow stands. Exactly five exist; the last three are terminal.
type State string

// The states of a flow.
const (
	// Pending: the flow is recorded and its verifier sealed; no authorization URL has been handed out yet.
	Pending State = "pending"
	// AwaitingCallback: the authorization URL is out and the provider's redirect is awaited.
	AwaitingCallback State = "awaiting_callback"
	// Complete: the code was exchanged and the token stored. Terminal.
	Complete State = "complete"
	// Error: the flow ended without a token; the record's Reason says why. Terminal.
	Error State = "error"
	// Expired: the deadline passed before a callback arrived. Terminal.
	Expired State = "expired"
)

// AllStates lists every state in the order a flow meets them.
var AllStates = []State{Pending, AwaitingCallback, Complete, Error, Expired}

// Valid reports whether s is one of the five states.
func (s State) Valid() bool { return slices.Contains(AllStates, s) }

// Terminal reports whether s is final: only self-loops follow it
// (callback_ignored, and on complete the token events about its connection).
func (s State) Terminal() bool { return s == Complete || s == Error || s == Expired }

// Live reports whether s is a valid, non-terminal state.
func (s State) Live() bool { return s == Pending || s == AwaitingCallback }

// Event is what happened to a flow. Every record carries exactly one.
type Event string

// The events of the machine.
const (
	// Created opens a flow. Its record carries the deadline, provider, scopes and transport.
	Created Event = "created"
	// URLIssued: the authorization URL was handed to the user.
	URLIssued Event = "url_issued"
	// ExchangeStarted is recorded before the token endpoint is called, so a
	// crash during the exchange is seen at the next open and the code is never
	// redeemed twice.
	ExchangeStarted Event = "exchange_started"
	// ExchangeSucceeded: the provider returned a token and it was stored.
	ExchangeSucceeded Event = "exchange_succeeded"
	// Failed ends a flow in error; the record's Reason says why.
	Failed Event = "failed"
	// DeadlinePassed ends a flow in expired.
	DeadlinePassed Event = "deadline_passed"
	// CallbackIgnored records a callback that changed nothing: the flow had
	// finished, or an exchange was already under way.
	CallbackIgnored Event = "callback_ignored"
	// DeviceAuthorized: the provider's device authorization endpoint
	// answered (RFC 8628 section 3.2); the user code is out and the engine
	// polls the token endpoint. It is the device transport's url_issued, and
	// carries the verification URI, the poll interval and the first poll's
	// time. The device code and user code are sealed, never in the record.
	DeviceAuthorized Event = "device_authorized"
	// PollSlowed: the poll interval of a device flow grew (the provider
	// answered slow_down, RFC 8628 section 3.5, or did not answer at all);
	// it carries the new interval and the next poll's time. A poll that
	// only hears authorization_pending is not recorded: it changes nothing.
	PollSlowed Event = "poll_slowed"
	// BrowserBound: the flow's one-time launch link was opened, and the
	// browser that opened it got the flow's binding cookie. From then on a
	// callback on the loopback listener must carry that cookie. The record
	// carries a keyed fingerprint of the cookie's value, never the value.
	BrowserBound Event = "browser_bound"

	// Token events: what happened to the connection a complete flow
	// produced (its stored token). They are self-loops on complete, recorded
	// on the flow whose exchange stored the token, so a connection's whole
	// life is one history that inspect shows and replay checks.

	// RefreshStarted is recorded before the token endpoint is called to
	// refresh, as exchange_started is before an exchange: its
	// compare-and-set on the flow's sequence lets one writer (of all the
	// engines sharing a log) spend the refresh token; the others wait for
	// its outcome.
	RefreshStarted Event = "refresh_started"
	// TokenRefreshed: the provider returned a new access token and it was
	// stored; rotated says a new refresh token was saved too.
	TokenRefreshed Event = "token_refreshed"
	// RefreshFailed: the refresh did not yield a token. transient says
	// whether trying again later may work (network, timeout, 5xx) or the
	// provider rejected it (an OAuth error such as invalid_grant).
	RefreshFailed Event = "refresh_failed"
	// Revoked: the provider's revocation endpoint (RFC 7009) accepted the
	// revocation of the connection's tokens.
	Revoked Event = "revoked"
	// Disconnected: the stored token was deleted; revocation says what the
	// provider was told. No token event follows it on the flow.
	Disconnected Event = "disconnected"
)

// Transition is one row of the machine's table.
type Transition struct {
	Event Event
	// From lists the states the event may leave. Empty means the event opens a new flow.
	From []State
	// To is the state the event leads to. Empty means the flow stays where it is.
	To State
}

// Table is the machine: every legal transition, in one place. The engine,
// replay and the diagrams are all driven by it.
var Table = []Transition{
	{Event: Created, From: nil, To: Pending},
	{Event: URLIssued, From: []State{Pending}, To: AwaitingCallback},
	{Event: ExchangeStarted, From: []State{AwaitingCallback}, To: ""},
	{Event: ExchangeSucceeded, From: []State{AwaitingCallback}, To: Complete},
	{Event: Failed, From: []State{Pending, AwaitingCallback}, To: Error},
	{Event: DeadlinePassed, From: []State{Pending, AwaitingCallback}, To: Expired},
	{Event: CallbackIgnored, From: []State{AwaitingCallback, Complete, Error, Expired}, To: ""},
	{Event: DeviceAuthorized, From: []State{Pending}, To: AwaitingCallback},
	{Event: PollSlowed, From: []State{AwaitingCallback}, To: ""},
	{Event: BrowserBound, From: []State{AwaitingCallback}, To: ""},
	{Event: RefreshStarted, From: []State{Complete}, To: ""},
	{Event: TokenRefreshed, From: []State{Complete}, To: ""},
	{Event: RefreshFailed, From: []State{Complete}, To: ""},
	{Event: Revoked, From: []State{Complete}, To: ""},
	{Event: Disconnected, From: []State{Complete}, To: ""},
}

// TokenEvent reports whether e is one of the events about a complete
// flow's connection.
func (e Event) TokenEvent() bool {
	switch e {
	case RefreshStarted, TokenRefreshed, RefreshFailed, Revoked, Disconnected:
		return true
	}
	return false
}

// AllEvents lists every event in table order.
var AllEvents = func() []Event {
	evs := make([]Event, len(Table))
	for i, t := range Table {
		evs[i] = t.Event
	}
	return evs
}()

// Valid reports whether e is an event of the table.
func (e Event) Valid() bool { return slices.Contains(AllEvents, e) }

// Reason says why a flow ended. It is shown to the user on the callback
// page, by flowctl and by inspect.
type Reason string

// Terminal reasons.
const (
	ProviderDenied      Reason = "provider_denied"
	ExchangeFailed      Reason = "exchange_failed"
	ExchangeInterrupted Reason = "exchange_interrupted"
	InvalidCallback     Reason = "invalid_callback"
	Canceled            Reason = "canceled"
	Superseded          Reason = "superseded"
	DeadlineExpired     Reason = "expired"
	ExpiredWhileDown    Reason = "expired_while_down"
	// ProviderRemoved: the flow's provider was removed from the engine
	// while the flow waited; its callback ended it without sending the
	// code anywhere.
	ProviderRemoved Reason = "provider_removed"
	// IssuerMismatch: the redirect's iss was not the issuer the flow
	// expects, or was missing where the issuer promised to send it (RFC
	// 9207 section 2.4). The code was never sent to the token endpoint:
	// the redirect may come from another authorization server (a mix-up
	// attack, RFC 9700 section 4.4).
	IssuerMismatch Reason = "issuer_mismatch"
	// IdentityInvalid: the code was exchanged, but who signed in could not
	// be established: the ID token failed verification (signature, iss,
	// aud, exp, nonce) or the userinfo endpoint did not answer with a
	// user. The token was not stored.
	IdentityInvalid Reason = "identity_invalid"
	// AccountMismatch: the user signed in with another account than the
	// one the flow was started for. The token was not stored.
	AccountMismatch Reason = "account_mismatch"
	// Exchanged is the reason of a complete flow.
	Exchanged Reason = "exchanged"
)

// reasonsOf lists the reasons each terminal event may carry.
var reasonsOf = map[Event][]Reason{
	ExchangeSucceeded: {Exchanged},
	Failed:            {ProviderDenied, ExchangeFailed, ExchangeInterrupted, InvalidCallback, Canceled, Superseded, IssuerMismatch, ProviderRemoved, IdentityInvalid, AccountMismatch},
	DeadlinePassed:    {DeadlineExpired, ExpiredWhileDown},
}

// ReasonsOf returns the reasons a terminal event may carry, or nil.
func ReasonsOf(e Event) []Reason { return slices.Clone(reasonsOf[e]) }

// Describe returns a sentence a user can read for the reason.
func (r Reason) Describe() string {
	switch r {
	case Exchanged:
		return "connected"
	case ProviderDenied:
		return "the provider denied the request"
	case ExchangeFailed:
		return "the provider refused to exchange the authorization code"
	case ExchangeInterrupted:
		return "flowd stopped while exchanging the code; start a new connect"
	case InvalidCallback:
		return "the callback was malformed"
	case Canceled:
		return "canceled before the provider's callback arrived"
	case Superseded:
		return "a newer connect for the same provider replaced this one"
	case DeadlineExpired:
		return "no callback arrived before the deadline"
	case ExpiredWhileDown:
		return "the deadline passed while flowd was not running"
	case ProviderRemoved:
		return "the provider was removed from the configuration before the callback arrived; the code was not used"
	case IssuerMismatch:
		return "the redirect did not come from the expected authorization server (its iss did not match), so its code was not used"
	case IdentityInvalid:
		return "flowd could not verify who signed in, so it kept no token"
	case AccountMismatch:
		return "you signed in with another account than the one asked for, so flowd kept no token"
	}
	return string(r)
}

// Errors Apply and Replay return, wrapped in a *RecordError that names the record.
var (
	ErrUnknownEvent      = errors.New("unknown event")
	ErrUnknownState      = errors.New("unknown state")
	ErrIllegalTransition = errors.New("illegal transition")
	ErrMissingDeadline   = errors.New("first record carries no deadline")
	ErrBadReason         = errors.New("reason does not fit the event")
	ErrWrongFlow         = errors.New("record belongs to another flow")
	// ErrSequenceGap: a record's flow_seq does not follow the flow's last one.
	ErrSequenceGap = errors.New("flow sequence out of order")
	// ErrOutOfOrder: a record's global seq is below the one before it (a
	// reordered log). Gaps in seq are fine: pruning and filtered exports
	// leave them.
	ErrOutOfOrder         = errors.New("log out of global order")
	ErrDuplicateSequence  = errors.New("duplicated sequence")
	ErrUnsupportedVersion = errors.New("unsupported schema version")
	ErrUndecodable        = errors.New("undecodable record")
)

// fsmEvents is the table in looplab/fsm's form. New flows start in the
// pseudo-state "" so Created goes through the same machine.
var fsmEvents = func() fsm.Events {
	evs := make(fsm.Events, 0, len(Table))
	for _, t := range Table {
		src := make([]string, 0, len(t.From))
		for _, s := range t.From {
			src = append(src, string(s))
		}
		if len(src) == 0 {
			src = []string{""}
		}
		if t.To == "" {
			// A self-loop: looplab/fsm needs one row per source to stay put.
			for _, s := range src {
				evs = append(evs, fsm.EventDesc{Name: string(t.Event), Src: []string{s}, Dst: s})
			}
			continue
		}
		evs = append(evs, fsm.EventDesc{Name: string(t.Event), Src: src, Dst: string(t.To)})
	}
	return evs
}()

// transitions is the machine's every answer, computed once by running
// each event from each state (and from "", a flow not yet created) through
// looplab/fsm with the table: the fsm stays the one authority on what is
// legal, and a transition costs a map lookup instead of an Event call
// (measured: Next took about 1.1-1.7 us through a pooled fsm, and the
// engine calls it twice per record; the CPU profile of flowbench item 7a
// had it at 7% of the whole run). A pair that is not a key is illegal.
var transitions = func() map[transitionKey]State {
	m := fsm.NewFSM("", fsmEvents, nil)
	out := map[transitionKey]State{}
	for _, from := range append([]State{""}, AllStates...) {
		for _, e := range AllEvents {
			m.SetState(string(from))
			// Background is never cancelled: a cancelled event leaves a
			// looplab FSM stuck for good.
			err := m.Event(context.Background(), string(e))
			// A self-loop of the table succeeds with NoTransitionError.
			if err != nil && !errors.As(err, new(fsm.NoTransitionError)) {
				continue
			}
			out[transitionKey{from, e}] = State(m.Current())
		}
	}
	return out
}()

type transitionKey struct {
	from State
	e    Event
}

// Next runs event e from state from through the table and returns the
// resulting state. from is "" for a flow that does not exist yet.
func Next(from State, e Event) (State, error) {
	if from != "" && !from.Valid() {
		return "", fmt.Errorf("%w %q", ErrUnknownState, from)
	}
	if !e.Valid() {
		return "", fmt.Errorf("%w %q", ErrUnknownEvent, e)
	}
	to, ok := transitions[transitionKey{from, e}]
	if !ok {
		if from == "" {
			return "", fmt.Errorf("%w: %s cannot open a flow", ErrIllegalTransition, e)
		}
		return "", fmt.Errorf("%w: %s from %s", ErrIllegalTransition, e, from)
	}
	return to, nil
}
