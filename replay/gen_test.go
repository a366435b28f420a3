package replay

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/states"
)

// The synthetic logs in testdata/replay were written once by this
// generator, from the states types, and then committed: a recorded log is a
// fixed artifact, never regenerated from the code it tests. -gen writes only
// files that do not exist yet, so a new scenario can be added here without
// touching the old logs. Logs exported from real engine and Dex runs are
// added as files, not here.
var gen = flag.Bool("gen", false, "write missing synthetic logs into testdata/replay (never overwrites)")

const (
	loopbackURI = "http://127.0.0.1:8085/oauth/callback"
	gatewayURI  = "https://connect.example.com/oauth/callback"
	ttl         = 5 * time.Minute
)

var genStart = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// flowID derives a realistic state token (22 base64url characters, 132
// bits) from a name, so the logs are reproducible.
func flowID(name string) string {
	sum := sha256.Sum256([]byte("flowd testdata flow " + name))
	return base64.RawURLEncoding.EncodeToString(sum[:])[:22]
}

// codeFP stands in for the engine's keyed fingerprint of an authorization
// code, in its form ("hmac:" and 24 hex digits). Only fingerprints ever
// enter a record.
func codeFP(name string) string {
	sum := sha256.Sum256([]byte("flowd testdata code " + name))
	return "hmac:" + hex.EncodeToString(sum[:12])
}

// logb builds a log in global order with one clock for the whole log.
type logb struct {
	t    *testing.T
	seq  uint64
	now  time.Time
	recs []states.Record
}

// fb is one flow of a log being built.
type fb struct {
	id    string
	fseq  uint64
	state states.State
	flow  states.Flow
}

func newLog(t *testing.T) *logb { return &logb{t: t, now: genStart} }

// skip leaves seq numbers unused, as pruning does.
func (l *logb) skip(n uint64) { l.seq += n }

// add appends event e of f after dt, running it through the machine so a
// scenario cannot record what the machine refuses.
func (l *logb) add(f *fb, dt time.Duration, e states.Event, d states.Data) {
	l.t.Helper()
	l.now = l.now.Add(dt)
	to, err := states.Next(f.state, e)
	require.NoError(l.t, err)
	l.seq++
	f.fseq++
	r := states.Record{Version: states.SchemaVersion, Seq: l.seq, Flow: f.id, FlowSeq: f.fseq, Event: e,
		From: f.state, To: to, Time: l.now, Data: d}
	f.flow, err = f.flow.Apply(r)
	require.NoError(l.t, err, "scenario records an illegal step")
	f.state = to
	l.recs = append(l.recs, r)
}

// start creates a flow and issues its URL.
func (l *logb) start(name, provider, principal string, tr states.Transport, scopes ...string) *fb {
	f := &fb{id: flowID(name)}
	uri := loopbackURI
	if tr == states.Gateway {
		uri = gatewayURI
	}
	dl := l.now.Add(ttl)
	l.add(f, 0, states.Created, states.Data{Provider: provider, Account: principal, Scopes: scopes,
		Transport: tr, RedirectURI: uri, Deadline: &dl})
	l.add(f, 3*time.Millisecond, states.URLIssued, states.Data{})
	return f
}

func (l *logb) exchange(f *fb, dt time.Duration, code string) {
	l.add(f, dt, states.ExchangeStarted, states.Data{CodeFingerprint: codeFP(code)})
}

func (l *logb) succeed(f *fb, dt time.Duration, granted ...string) {
	l.add(f, dt, states.ExchangeSucceeded, states.Data{Reason: states.Exchanged, GrantedScopes: granted, TokenStored: true})
}

func (l *logb) fail(f *fb, dt time.Duration, d states.Data) { l.add(f, dt, states.Failed, d) }

func (l *logb) ignore(f *fb, dt time.Duration, why states.Ignored, code string) {
	l.add(f, dt, states.CallbackIgnored, states.Data{Ignored: why, CodeFingerprint: codeFP(code)})
}

// scenarios are the hand-made logs: one per behaviour the issue lists.
var scenarios = map[string]func(l *logb){
	"happy_loopback": func(l *logb) {
		f := l.start("happy_loopback", "github", "", states.Loopback, "repo", "read:user")
		l.exchange(f, 18400*time.Millisecond, "happy_loopback")
		l.succeed(f, 312*time.Millisecond, "repo", "read:user")
	},
	"happy_gateway": func(l *logb) {
		// Google grants less than asked when the user unticks a scope.
		f := l.start("happy_gateway", "google", "alice@example.com", states.Gateway,
			"openid", "email", "https://www.googleapis.com/auth/drive.readonly")
		l.exchange(f, 23*time.Second, "happy_gateway")
		l.succeed(f, 241*time.Millisecond, "openid", "email")
	},
	"happy_manual": func(l *logb) {
		// Dex answers without a scope field: the requested scopes are granted.
		f := l.start("happy_manual", "dex", "", states.Manual, "openid", "profile", "email", "offline_access")
		l.exchange(f, 41*time.Second, "happy_manual")
		l.succeed(f, 96*time.Millisecond, "openid", "profile", "email", "offline_access")
	},
	"provider_denied": func(l *logb) {
		f := l.start("provider_denied", "github", "", states.Loopback, "repo")
		l.fail(f, 9*time.Second, states.Data{Reason: states.ProviderDenied, ErrorCode: "access_denied",
			Message: "The user has denied your application access."})
	},
	"exchange_failed": func(l *logb) {
		f := l.start("exchange_failed", "google", "", states.Loopback, "openid", "email")
		l.exchange(f, 14*time.Second, "exchange_failed")
		l.fail(f, 180*time.Millisecond, states.Data{Reason: states.ExchangeFailed, HTTPStatus: 400,
			ErrorCode: "invalid_grant", Message: "Bad Request"})
	},
	"exchange_interrupted": func(l *logb) {
		// flowd is killed while the token endpoint answers; at the next
		// open the flow is ended rather than the code redeemed again.
		f := l.start("exchange_interrupted", "github", "", states.Loopback, "repo")
		l.exchange(f, 12*time.Second, "exchange_interrupted")
		l.fail(f, 47*time.Second, states.Data{Reason: states.ExchangeInterrupted,
			Message: "flowd stopped during the exchange"})
	},
	"expired": func(l *logb) {
		f := l.start("expired", "github", "", states.Loopback, "repo")
		l.add(f, ttl-3*time.Millisecond, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired})
	},
	"expired_while_down": func(l *logb) {
		f := l.start("expired_while_down", "dex", "", states.Manual, "openid")
		l.add(f, 2*time.Hour+17*time.Minute, states.DeadlinePassed, states.Data{Reason: states.ExpiredWhileDown})
	},
	"canceled": func(l *logb) {
		f := l.start("canceled", "github", "", states.Loopback, "repo")
		l.fail(f, 6*time.Second, states.Data{Reason: states.Canceled})
	},
	"superseded": func(l *logb) {
		// The user gives up on the first browser tab and connects again.
		a := l.start("superseded_first", "github", "alice", states.Loopback, "repo")
		b := &fb{id: flowID("superseded_second")}
		dl := l.now.Add(40 * time.Second).Add(ttl)
		l.add(b, 40*time.Second, states.Created, states.Data{Provider: "github", Account: "alice",
			Scopes: []string{"repo"}, Transport: states.Loopback, RedirectURI: loopbackURI, Deadline: &dl})
		l.add(b, 2*time.Millisecond, states.URLIssued, states.Data{})
		// The engine records the new flow first, then ends the old one.
		l.fail(a, time.Millisecond, states.Data{Reason: states.Superseded, SupersededBy: b.id})
		l.exchange(b, 11*time.Second, "superseded_second")
		l.succeed(b, 280*time.Millisecond, "repo")
	},
	"late_callback": func(l *logb) {
		// The browser replays the redirect after success, and another
		// user comes back after the deadline.
		a := l.start("late_callback_done", "github", "", states.Loopback, "repo")
		l.exchange(a, 8*time.Second, "late_callback_done")
		l.succeed(a, 250*time.Millisecond, "repo")
		l.ignore(a, 4*time.Second, states.IgnoredFinished, "late_callback_done")
		b := l.start("late_callback_expired", "google", "bob@example.com", states.Gateway, "openid")
		l.add(b, ttl-3*time.Millisecond, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired})
		l.ignore(b, 90*time.Second, states.IgnoredFinished, "late_callback_expired")
	},
	"exchange_in_progress": func(l *logb) {
		// A double-submitted redirect arrives while the first is being exchanged.
		f := l.start("exchange_in_progress", "github", "", states.Loopback, "repo")
		l.exchange(f, 10*time.Second, "exchange_in_progress")
		l.ignore(f, 40*time.Millisecond, states.IgnoredInProgress, "exchange_in_progress")
		l.succeed(f, 260*time.Millisecond, "repo")
	},
	"live_at_export": func(l *logb) {
		// Exported while one flow awaits its callback and another is mid-exchange.
		a := l.start("live_awaiting", "github", "", states.Loopback, "repo")
		b := l.start("live_exchanging", "google", "", states.Gateway, "openid")
		l.exchange(b, 20*time.Second, "live_exchanging")
		_ = a
	},
	"interleaved_daemon": func(l *logb) {
		// A daemon serving several users; older flows were pruned, leaving
		// gaps in seq.
		l.skip(211)
		a := l.start("daemon_a", "github", "alice", states.Loopback, "repo", "read:org")
		b := l.start("daemon_b", "google", "bob@example.com", states.Gateway, "openid", "email")
		l.skip(3)
		c := l.start("daemon_c", "dex", "carol", states.Manual, "openid", "offline_access")
		l.exchange(a, 9*time.Second, "daemon_a")
		l.fail(b, 2*time.Second, states.Data{Reason: states.InvalidCallback,
			Message: "callback carries neither code nor error"})
		l.succeed(a, 190*time.Millisecond, "repo", "read:org")
		l.exchange(c, 30*time.Second, "daemon_c")
		l.succeed(c, 120*time.Millisecond, "openid", "offline_access")
	},
}

// brokenBase is the good log the broken ones are made from: two flows,
// interleaved.
//
//	1 A created   2 A url_issued   3 B created   4 B url_issued
//	5 A exchange_started   6 B failed(provider_denied)   7 A exchange_succeeded
func brokenBase(t *testing.T) []string {
	l := newLog(t)
	a := &fb{id: flowID("broken_a")}
	b := &fb{id: flowID("broken_b")}
	created := func(f *fb, dt time.Duration, provider string) {
		dl := l.now.Add(dt).Add(ttl)
		l.add(f, dt, states.Created, states.Data{Provider: provider, Scopes: []string{"openid"},
			Transport: states.Loopback, RedirectURI: loopbackURI, Deadline: &dl})
	}
	created(a, 0, "github")
	l.add(a, 3*time.Millisecond, states.URLIssued, states.Data{})
	created(b, 2*time.Second, "google")
	l.add(b, 3*time.Millisecond, states.URLIssued, states.Data{})
	l.exchange(a, 12*time.Second, "broken_a")
	l.fail(b, 2*time.Second, states.Data{Reason: states.ProviderDenied, ErrorCode: "access_denied"})
	l.succeed(a, 200*time.Millisecond, "openid")
	var lines []string
	for _, r := range l.recs {
		enc, err := r.Encode()
		require.NoError(t, err)
		lines = append(lines, string(enc))
	}
	return lines
}

// brokenCase is one deliberately broken log: how it is made from the base
// (lines are 0-based here, 1-based in the sidecar) and what must fail.
type brokenCase struct {
	why     string
	mangle  func(lines []string) string
	err     string
	line    int
	comment string
}

func joinLines(ls []string) string { return strings.Join(ls, "\n") + "\n" }

func replaceIn(ls []string, i int, old, new string) []string {
	if !strings.Contains(ls[i], old) {
		panic(fmt.Sprintf("line %d lacks %q", i+1, old))
	}
	ls[i] = strings.Replace(ls[i], old, new, 1)
	return ls
}

var brokenCases = map[string]brokenCase{
	"reordered": {
		why:    "lines 5 and 6 swapped: seq goes 4, 6, 5",
		mangle: func(ls []string) string { ls[4], ls[5] = ls[5], ls[4]; return joinLines(ls) },
		err:    "states.ErrOutOfOrder", line: 6,
	},
	"illegal_transition": {
		why: "line 7 issues flow A's URL a second time instead of completing it",
		mangle: func(ls []string) string {
			ls = replaceIn(ls, 6, `"event":"exchange_succeeded"`, `"event":"url_issued"`)
			ls = replaceIn(ls, 6, `"to":"complete"`, `"to":"awaiting_callback"`)
			ls = replaceIn(ls, 6, `"reason":"exchanged",`, ``)
			return joinLines(ls)
		},
		err: "states.ErrIllegalTransition", line: 7,
	},
	"completion_without_exchange": {
		why: "line 5 completes flow A without exchange_started: the table allows the edge, the guard does not",
		mangle: func(ls []string) string {
			ls = replaceIn(ls, 4, `"event":"exchange_started"`, `"event":"exchange_succeeded"`)
			ls = replaceIn(ls, 4, `"to":"awaiting_callback"`, `"to":"complete"`)
			ls = replaceIn(ls, 4, `"data":{`, `"data":{"reason":"exchanged","token_stored":true,`)
			return joinLines(ls[:5])
		},
		err: "states.ErrIllegalTransition", line: 5,
	},
	"duplicated_seq": {
		why:    "line 5 appears twice (lines 5 and 6)",
		mangle: func(ls []string) string { return joinLines(append(ls[:5:5], ls[4:]...)) },
		err:    "states.ErrDuplicateSequence", line: 6,
	},
	"tampered_version": {
		why:    `line 4 claims schema version 2, which this flowd does not know`,
		mangle: func(ls []string) string { return joinLines(replaceIn(ls, 3, `"v":1,`, `"v":2,`)) },
		err:    "states.ErrUnsupportedVersion", line: 4,
	},
	"missing_version": {
		why:    `line 3 has no "v" field`,
		mangle: func(ls []string) string { return joinLines(replaceIn(ls, 2, `"v":1,`, ``)) },
		err:    "states.ErrUnsupportedVersion", line: 3,
	},
	"truncated": {
		why:    "the file ends in the middle of line 7 (no newline)",
		mangle: func(ls []string) string { ls[6] = ls[6][:len(ls[6])/2]; return strings.Join(ls, "\n") },
		err:    "replay.ErrTruncated", line: 7,
	},
	"missing_deadline": {
		why: "line 3 creates flow B without a deadline",
		mangle: func(ls []string) string {
			i := strings.Index(ls[2], `,"deadline":"`)
			j := strings.Index(ls[2][i+1:], `"}`) + i + 1
			ls[2] = ls[2][:i] + ls[2][j+1:]
			return joinLines(ls)
		},
		err: "states.ErrMissingDeadline", line: 3,
	},
	"unknown_event": {
		why: "line 7 (after a blank line 3) ends flow B with an event no flowd version had; blank lines count",
		mangle: func(ls []string) string {
			ls = replaceIn(ls, 5, `"event":"failed"`, `"event":"denied"`)
			return joinLines(append(ls[:2:2], append([]string{""}, ls[2:]...)...))
		},
		err: "states.ErrUnknownEvent", line: 7,
	},
	"garbage_line": {
		why:    "line 4 is an HTML error page a proxy put in the export",
		mangle: func(ls []string) string { ls[3] = "<html><body>502 Bad Gateway</body></html>"; return joinLines(ls) },
		err:    "states.ErrUndecodable", line: 4,
	},
	"flow_seq_gap": {
		why:    "line 5 (flow A's exchange_started) was deleted: flow A jumps from flow_seq 2 to 4 on line 6",
		mangle: func(ls []string) string { return joinLines(append(ls[:4:4], ls[5:]...)) },
		err:    "states.ErrSequenceGap", line: 6,
	},
	"bad_reason": {
		why: "line 6 fails flow B with an expiry reason",
		mangle: func(ls []string) string {
			return joinLines(replaceIn(ls, 5, `"reason":"provider_denied"`, `"reason":"expired"`))
		},
		err: "states.ErrBadReason", line: 6,
	},
	"unknown_state": {
		why: "line 4 issues flow B's URL into a state no flowd version had",
		mangle: func(ls []string) string {
			return joinLines(replaceIn(ls, 3, `"to":"awaiting_callback"`, `"to":"paused"`))
		},
		err: "states.ErrUnknownState", line: 4,
	},
	"secret_field": {
		why: "line 7 carries a field no record has (here a stand-in for a token): the record is refused, never half-read",
		mangle: func(ls []string) string {
			return joinLines(replaceIn(ls, 6, `"data":{`, `"data":{"access_token":"not-a-real-token",`))
		},
		err: "states.ErrUndecodable", line: 7,
	},
}

func TestGenerate(t *testing.T) {
	if !*gen {
		t.Skip("writes synthetic logs only with -gen")
	}
	write := func(path, content string) {
		if _, err := os.Stat(path); err == nil {
			t.Logf("kept %s", path)
			return
		}
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		t.Logf("wrote %s", path)
	}
	for name, sc := range scenarios {
		l := newLog(t)
		sc(l)
		var b strings.Builder
		require.NoError(t, WriteLog(&b, l.recs))
		write(filepath.Join(testdata, name+".jsonl"), b.String())
	}
	require.NoError(t, os.MkdirAll(filepath.Join(testdata, "broken"), 0o755))
	for name, c := range brokenCases {
		write(filepath.Join(testdata, "broken", name+".jsonl"), c.mangle(brokenBase(t)))
		write(filepath.Join(testdata, "broken", name+".want"),
			fmt.Sprintf("# %s\nerror: %s\nline: %d\n", c.why, c.err, c.line))
	}
}
