package states

import (
	"fmt"
	"slices"
	"time"
)

// Flow is what a flow's history adds up to: the fold of its records through
// the machine. The engine keeps one per live flow; replay and inspect build
// them from logs.
type Flow struct {
	ID    string
	State State
	// Reason is set once the flow is terminal.
	Reason Reason
	// Exchanging is true between exchange_started and the exchange's outcome.
	Exchanging bool
	// LastSeq is the FlowSeq of the flow's last record.
	LastSeq uint64

	Provider string
	// Account is the account the flow connects: the one asked for, and
	// once complete the one the token belongs to (see Data.Account).
	Account     string
	Scopes      []string
	Transport   Transport
	RedirectURI string
	// Issuer and IssuerRequired are what the flow's redirect must carry
	// as iss (RFC 9207), from its created record.
	Issuer         string
	IssuerRequired bool
	Created        time.Time
	Deadline       time.Time
	// Ended is when the flow became terminal.
	Ended time.Time
	// Resource is the resource indicator of a connect by MCP server URL.
	Resource string
	// ClientID and Registration name the client the flow used when it was
	// not the provider's configured one (an MCP server's registration, or
	// a per-start client) and how it came; "" otherwise.
	ClientID, Registration string

	GrantedScopes []string
	TokenStored   bool
	Message       string
	ErrorCode     string
	HTTPStatus    int
	SupersededBy  string
	// Subject and Email identify the user the provider signed in, once
	// complete (when flowd was configured to identify users).
	Subject string
	Email   string
	// NonceFingerprint is set when the flow sent an OpenID Connect nonce.
	NonceFingerprint string
	// IgnoredCallbacks counts callbacks recorded as changing nothing.
	IgnoredCallbacks int
	// BindingFingerprint is set once the flow is bound to the browser that
	// opened its launch link (browser_bound): the keyed fingerprint of the
	// binding cookie a loopback callback must carry.
	BindingFingerprint string

	// Conn is the connection the flow produced: set by an
	// exchange_succeeded that stored a token, advanced by the token events.
	// Nil for every other flow.
	Conn *Connection
	// Device flows: where the user enters the code, how often the token
	// endpoint is polled, and the last recorded poll time. Polls follow
	// NextPoll every PollInterval; the ones that change nothing are not
	// recorded, so NextPoll may lie in the past (see NextPollAfter).
	VerificationURI string
	PollInterval    time.Duration
	NextPoll        time.Time
}

// NextPollAfter returns the first time of a device flow's poll schedule
// (NextPoll, then every PollInterval) at or after t: where polling resumes
// after a restart, neither at once nor later than the schedule says. It
// returns the zero time for a flow that does not poll.
func (f Flow) NextPollAfter(t time.Time) time.Time {
	if f.Transport != Device || f.NextPoll.IsZero() {
		return time.Time{}
	}
	if !f.NextPoll.Before(t) || f.PollInterval <= 0 {
		return f.NextPoll
	}
	n := (t.Sub(f.NextPoll) + f.PollInterval - 1) / f.PollInterval
	return f.NextPoll.Add(n * f.PollInterval)
}

// Bound reports whether the flow is bound to a browser: its loopback
// callbacks must carry the binding cookie.
func (f Flow) Bound() bool { return f.BindingFingerprint != "" }

// Apply checks rec against the machine and f, and returns f advanced by it.
// f is the zero Flow for a flow's first record. On error f is unchanged and
// the error, a *RecordError, names the record.
func (f Flow) Apply(rec Record) (Flow, error) {
	err := f.Advance(&rec)
	return f, err
}

// Advance is Apply in place: it checks rec against the machine and f, and
// advances f by it. On error f is unchanged and the error, a
// *RecordError, names the record. The engine's commit calls it on every
// transition: a Flow is some 480 bytes and a Record 460, and Apply copies
// both in and the Flow out. Advance keeps nothing of rec but copies of its
// lists, so the caller may reuse rec.
func (f *Flow) Advance(rec *Record) error {
	if err := f.check(rec); err != nil {
		return &RecordError{Seq: rec.Seq, Flow: rec.Flow, FlowSeq: rec.FlowSeq, Err: err}
	}
	d := &rec.Data
	f.LastSeq = rec.FlowSeq
	f.State = rec.To
	switch rec.Event {
	case Created:
		f.ID = rec.Flow
		f.Provider, f.Account, f.Transport, f.RedirectURI = d.Provider, d.Account, d.Transport, d.RedirectURI
		f.NonceFingerprint = d.NonceFingerprint
		f.Scopes = slices.Clone(d.Scopes)
		f.Issuer, f.IssuerRequired = d.Issuer, d.IssuerRequired
		if d.MCPDiscovery != nil {
			f.Resource, f.ClientID, f.Registration = d.Resource, d.ClientID, d.Registration
		}
		f.Created = rec.Time
		f.Deadline = *d.Deadline
	case ExchangeStarted:
		f.Exchanging = true
	case ExchangeSucceeded, Failed, DeadlinePassed:
		f.Exchanging = false
		f.Reason = d.Reason
		f.Ended = rec.Time
		f.Message, f.ErrorCode, f.HTTPStatus, f.SupersededBy = d.Message, d.ErrorCode, d.HTTPStatus, d.SupersededBy
		f.GrantedScopes = slices.Clone(d.GrantedScopes)
		f.TokenStored = d.TokenStored
		if d.Account != "" {
			f.Account = d.Account
		}
		f.Subject, f.Email = d.Subject, d.Email
		if rec.Event == ExchangeSucceeded && d.TokenStored {
			f.Conn = newConnection(f, rec)
		}
	case CallbackIgnored:
		f.IgnoredCallbacks++
	case DeviceAuthorized, PollSlowed:
		// check made sure d.DevicePolling is set.
		if d.VerificationURI != "" {
			f.VerificationURI = d.VerificationURI
		}
		f.PollInterval = time.Duration(d.PollInterval) * time.Second
		f.NextPoll = *d.NextPoll
		if rec.Event == PollSlowed {
			f.ErrorCode, f.Message = d.ErrorCode, d.Message
		}
	case BrowserBound:
		f.BindingFingerprint = d.BindingFingerprint
	default:
		if rec.Event.TokenEvent() {
			c := *f.Conn // a copy: a Flow is a value, earlier folds keep theirs
			c.apply(rec)
			f.Conn = &c
		}
	}
	return nil
}

func (f *Flow) check(rec *Record) error {
	if rec.Version != SchemaVersion {
		return fmt.Errorf("%w %d", ErrUnsupportedVersion, rec.Version)
	}
	if f.ID != "" && rec.Flow != f.ID {
		return fmt.Errorf("%w %s", ErrWrongFlow, ShortID(f.ID))
	}
	if rec.Flow == "" {
		return fmt.Errorf("%w: empty flow id", ErrWrongFlow)
	}
	switch {
	case rec.FlowSeq == f.LastSeq && f.LastSeq != 0:
		return fmt.Errorf("%w: flow_seq %d again", ErrDuplicateSequence, rec.FlowSeq)
	case rec.FlowSeq != f.LastSeq+1:
		return fmt.Errorf("%w: flow_seq %d after %d", ErrSequenceGap, rec.FlowSeq, f.LastSeq)
	}
	// An unknown event or state is the more useful diagnosis than a
	// mismatch it causes: check the names before comparing them.
	if !rec.Event.Valid() {
		return fmt.Errorf("%w %q", ErrUnknownEvent, rec.Event)
	}
	if rec.From != "" && !rec.From.Valid() {
		return fmt.Errorf("%w %q in from", ErrUnknownState, rec.From)
	}
	if rec.From != f.State {
		return fmt.Errorf("%w: record says from %q but the flow is %q", ErrIllegalTransition, rec.From, f.State)
	}
	if !rec.To.Valid() {
		return fmt.Errorf("%w %q in to", ErrUnknownState, rec.To)
	}
	to, err := Next(f.State, rec.Event)
	if err != nil {
		return err
	}
	if to != rec.To {
		return fmt.Errorf("%w: %s leads from %s to %s, record says %s", ErrIllegalTransition, rec.Event, f.State, to, rec.To)
	}
	d := &rec.Data
	// The reason is checked before the guards that read it, so an unknown
	// reason is reported as such rather than as the transition it implies.
	if want := reasonsOf[rec.Event]; want != nil && !slices.Contains(want, d.Reason) {
		return fmt.Errorf("%w: %s with reason %q (want one of %v)", ErrBadReason, rec.Event, d.Reason, want)
	}
	if reasonsOf[rec.Event] == nil && d.Reason != "" {
		return fmt.Errorf("%w: %s carries reason %q", ErrBadReason, rec.Event, d.Reason)
	}
	device := f.Transport == Device
	switch rec.Event {
	case Created:
		if d.Deadline == nil || d.Deadline.IsZero() {
			return ErrMissingDeadline
		}
	case URLIssued:
		if device {
			return fmt.Errorf("%w: url_issued in a device flow (it has no authorization URL; device_authorized)", ErrIllegalTransition)
		}
	case DeviceAuthorized, PollSlowed:
		switch {
		case !device:
			return fmt.Errorf("%w: %s in a %s flow (only device flows poll)", ErrIllegalTransition, rec.Event, f.Transport)
		case d.DevicePolling == nil || d.PollInterval <= 0 || d.NextPoll == nil || d.NextPoll.IsZero():
			return fmt.Errorf("%w: %s needs poll_interval and next_poll", ErrIllegalTransition, rec.Event)
		case rec.Event == PollSlowed && time.Duration(d.PollInterval)*time.Second <= f.PollInterval:
			// RFC 8628 section 3.5: slow_down adds to the interval for the rest of the flow.
			return fmt.Errorf("%w: poll_slowed to %ds from %s (an interval only grows)", ErrIllegalTransition, d.PollInterval, f.PollInterval)
		}
	case ExchangeStarted:
		if device {
			// A device code is polled, not redeemed once: no exchange to start.
			return fmt.Errorf("%w: exchange_started in a device flow (it polls)", ErrIllegalTransition)
		}
		if f.Exchanging {
			return fmt.Errorf("%w: exchange_started twice", ErrIllegalTransition)
		}
	case ExchangeSucceeded:
		if !f.Exchanging && !device {
			return fmt.Errorf("%w: exchange_succeeded without exchange_started", ErrIllegalTransition)
		}
	case CallbackIgnored:
		// Why a callback changed nothing must match the flow: only an
		// exchange under way or a finished flow turns a callback away.
		// Anything else means the engine dropped a callback it should
		// have acted on.
		// A callback without the flow's binding is turned away only from
		// a bound flow that is still waiting for its callback.
		switch {
		case d.Ignored == IgnoredBindingMissing || d.Ignored == IgnoredBindingMismatch:
			if f.State != AwaitingCallback || f.Exchanging || !f.Bound() {
				return fmt.Errorf("%w: callback_ignored(%s) from a flow that is not bound and awaiting its callback", ErrIllegalTransition, d.Ignored)
			}
		case d.Ignored != IgnoredInProgress && d.Ignored != IgnoredFinished:
			return fmt.Errorf("%w: callback_ignored with ignored=%q (want %s, %s, %s or %s)", ErrBadReason, d.Ignored, IgnoredInProgress, IgnoredFinished, IgnoredBindingMissing, IgnoredBindingMismatch)
		case d.Ignored == IgnoredInProgress && !f.Exchanging:
			return fmt.Errorf("%w: callback_ignored(%s) without an exchange under way", ErrIllegalTransition, d.Ignored)
		case d.Ignored == IgnoredFinished && !f.State.Terminal():
			return fmt.Errorf("%w: callback_ignored(%s) while the flow is %s", ErrIllegalTransition, d.Ignored, f.State)
		}
	case RefreshStarted, TokenRefreshed, RefreshFailed, Revoked, Disconnected:
		return f.checkTokenEvent(rec)
	case BrowserBound:
		switch {
		case d.BindingFingerprint == "":
			return fmt.Errorf("%w: browser_bound without a binding fingerprint", ErrBadReason)
		case device:
			return fmt.Errorf("%w: browser_bound in a device flow (it has no launch link)", ErrIllegalTransition)
		case f.Bound():
			return fmt.Errorf("%w: browser_bound twice: a launch link binds one browser", ErrIllegalTransition)
		case f.Exchanging:
			return fmt.Errorf("%w: browser_bound while an exchange is under way", ErrIllegalTransition)
		}
	case Failed, DeadlinePassed:
		if device {
			// A poll that fails ends the flow exchange_failed at once (a poll
			// is not recorded before it is made); nothing is interrupted.
			if d.Reason == ExchangeInterrupted {
				return fmt.Errorf("%w: %s(%s) in a device flow (it never starts an exchange)", ErrIllegalTransition, rec.Event, d.Reason)
			}
			break
		}
		exchangeOutcome := d.Reason == ExchangeFailed || d.Reason == ExchangeInterrupted || d.Reason == IdentityInvalid || d.Reason == AccountMismatch
		if exchangeOutcome != f.Exchanging {
			if f.Exchanging {
				return fmt.Errorf("%w: %s(%s) while an exchange is under way", ErrIllegalTransition, rec.Event, d.Reason)
			}
			return fmt.Errorf("%w: %s(%s) without exchange_started", ErrIllegalTransition, rec.Event, d.Reason)
		}
	}
	return nil
}

// Fold replays one flow's history through the machine.
func Fold(history []Record) (Flow, error) {
	var f Flow
	for i := range history {
		if err := f.Advance(&history[i]); err != nil {
			return f, err
		}
	}
	return f, nil
}

// Step is one record of a replay and the flow it left behind.
type Step struct {
	Record Record
	Flow   Flow
}

// Replay checks a whole log in global order: Seq strictly increasing, and
// every flow's records legal in turn. It calls step after each record, and
// stops at the first bad record with a *RecordError naming it (Line is the
// record's 1-based index in log).
func Replay(log []Record, step func(Step) error) (map[string]Flow, error) {
	flows := map[string]Flow{}
	var last uint64
	for i, rec := range log {
		fail := func(err error) error {
			return &RecordError{Line: i + 1, Seq: rec.Seq, Flow: rec.Flow, FlowSeq: rec.FlowSeq, Err: err}
		}
		switch {
		case i > 0 && rec.Seq == last:
			return flows, fail(fmt.Errorf("%w: seq %d again", ErrDuplicateSequence, rec.Seq))
		case i > 0 && rec.Seq < last:
			return flows, fail(fmt.Errorf("%w: seq %d after %d", ErrOutOfOrder, rec.Seq, last))
		}
		last = rec.Seq
		f, err := flows[rec.Flow].Apply(rec)
		if err != nil {
			re := err.(*RecordError)
			re.Line = i + 1
			return flows, re
		}
		flows[rec.Flow] = f
		if step != nil {
			if err := step(Step{Record: rec, Flow: f}); err != nil {
				return flows, err
			}
		}
	}
	return flows, nil
}
