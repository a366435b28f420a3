// Package replay reads an exported event log (JSON lines, one states.Record
// a line, as `flowctl log export` writes it) and replays it through the
// current machine, states.Replay. It is what `flowctl replay <log.jsonl>`
// runs, and what the golden tests in testdata/replay run.
//
// Replay answers two questions about a recorded log: what did each flow go
// through, record by record, and does the current code still accept the log
// (a change to the machine must never silently change the meaning of logs
// already on disk). The first problem in the file stops the replay with an
// *Error naming its line: an undecodable or truncated line, an unsupported
// schema version, an illegal transition, an unknown event, a reordered or
// duplicated sequence, a missing deadline.
//
// The package reads no clock and does no I/O beyond the reader and writer
// it is given: the same log always gives the same output, byte for byte.
//
// Caveat: the whole log is held in memory while it is replayed (about the
// size of the file again). Exports attached to bug reports are small; a
// multi-gigabyte log should be exported per flow (--flow).
package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flowdhq/flowd/states"
)

// MaxLine bounds one line of a log. Records are a few hundred bytes; a
// longer line is damage, and refusing it keeps a bad file from exhausting
// memory.
const MaxLine = 1 << 20

// ErrTruncated marks a line that ends before its record does: the file was
// cut short (an interrupted download or copy, a full disk). It is also an
// states.ErrUndecodable, since the line cannot be read.
var ErrTruncated = fmt.Errorf("%w: line cut short", states.ErrUndecodable)

// ErrLineTooLong marks a line longer than MaxLine. It is also an
// states.ErrUndecodable.
var ErrLineTooLong = fmt.Errorf("%w: line longer than %d bytes", states.ErrUndecodable, MaxLine)

// Error is the first problem a replay met, and where. Err wraps the
// sentinel that names the problem (states.ErrIllegalTransition,
// states.ErrUnsupportedVersion, ErrTruncated, ...): test it with errors.Is.
// When the line decoded, Err also wraps the *states.RecordError naming the
// record.
type Error struct {
	// Line is the 1-based line of the log the problem is on.
	Line int
	// Record is the offending record, or nil when the line did not decode.
	Record *states.Record
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *Error) Unwrap() error { return e.Err }

// Entry is one record of a log and the line it was read from.
type Entry struct {
	Line   int
	Record states.Record
}

// Summary is what a replay adds up to.
type Summary struct {
	// Records counts the records replayed without error.
	Records int
	// Flows holds each flow as the replay left it, in the order the log
	// first mentions them. After an error it holds the flows as they stood
	// before the offending record.
	Flows []states.Flow
}

// Flow returns the flow with the given id, and whether the log holds it.
func (s Summary) Flow(id string) (states.Flow, bool) {
	for _, f := range s.Flows {
		if f.ID == id {
			return f, true
		}
	}
	return states.Flow{}, false
}

// Run reads a JSON-lines log from r, replays it through the current
// machine, and writes to w each record with the flow's state after it, then
// each flow's final standing (state, terminal reason, granted scopes,
// whether a token was stored).
//
// Blank lines are skipped but counted, so line numbers match the file. The
// first problem stops the replay: Run returns the Summary so far and an
// *Error naming the line, after writing the records before it. Problems are
// reported in file order: an illegal transition on line 3 is reported even
// when line 9 is truncated. An error reading r or writing w is returned
// wrapped, not as an *Error.
func Run(r io.Reader, w io.Writer) (Summary, error) {
	entries, readErr := ReadLog(r)
	var ioErr *Error
	if readErr != nil && !errors.As(readErr, &ioErr) {
		return Summary{}, readErr
	}
	bw := bufio.NewWriter(w)
	sum, err := replay(entries, bw)
	if err == nil && readErr != nil {
		err = readErr
	}
	if err == nil {
		writeFinal(bw, sum)
	}
	if ferr := bw.Flush(); ferr != nil {
		return sum, fmt.Errorf("write replay output: %w", ferr)
	}
	return sum, err
}

// ReadLog reads a JSON-lines log, decoding each line with states.Decode
// (which upgrades older schema versions). It stops at the first line that
// does not decode and returns the entries before it with an *Error naming
// that line. Blank lines are skipped but counted.
func ReadLog(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	var entries []Entry
	for n := 1; ; n++ {
		line, atEOF, err := readLine(br)
		if err != nil {
			if errors.Is(err, ErrLineTooLong) {
				return entries, &Error{Line: n, Err: err}
			}
			return entries, fmt.Errorf("read log at line %d: %w", n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			rec, err := states.Decode(line)
			if err != nil {
				return entries, &Error{Line: n, Err: explain(line, atEOF, err)}
			}
			entries = append(entries, Entry{Line: n, Record: rec})
		}
		if atEOF {
			return entries, nil
		}
	}
}

// readLine returns the next line without its newline, and whether the input
// ended with it (a final line without a newline, or nothing).
func readLine(br *bufio.Reader) (line []byte, atEOF bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine+1 {
			return nil, false, ErrLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			line = line[:len(line)-1]
			// A newline that ends the input ends the last line.
			if _, perr := br.Peek(1); perr == io.EOF {
				return line, true, nil
			}
			return line, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			return line, true, nil
		default:
			return nil, false, err
		}
	}
}

// explain turns a decode error into the most specific one: a line whose
// JSON stops early is a truncated line, and on the last line of the file
// that means the file was cut short.
func explain(line []byte, last bool, err error) error {
	if !errors.Is(err, states.ErrUndecodable) {
		return err
	}
	var v json.RawMessage
	if derr := json.NewDecoder(bytes.NewReader(line)).Decode(&v); !errors.Is(derr, io.ErrUnexpectedEOF) {
		return err
	}
	if last {
		return fmt.Errorf("%w: the file ends mid-record; export the log again (or drop the last line)", ErrTruncated)
	}
	return fmt.Errorf("%w: the record stops before its end; the file is damaged", ErrTruncated)
}

// replay runs the entries through states.Replay, writing each step.
func replay(entries []Entry, w io.Writer) (Summary, error) {
	recs := Records(entries)
	var sum Summary
	index := map[string]int{}
	prev := map[string]time.Time{}
	i := 0
	_, err := states.Replay(recs, func(s states.Step) error {
		e := entries[i]
		i++
		writeStep(w, e, s, prev[s.Record.Flow])
		prev[s.Record.Flow] = s.Record.Time
		if k, ok := index[s.Flow.ID]; ok {
			sum.Flows[k] = s.Flow
		} else {
			index[s.Flow.ID] = len(sum.Flows)
			sum.Flows = append(sum.Flows, s.Flow)
		}
		sum.Records++
		return nil
	})
	var re *states.RecordError
	if errors.As(err, &re) && re.Line >= 1 && re.Line <= len(entries) {
		// states.Replay numbers records by position; the user needs the
		// line of the file, which differs once blank lines are skipped.
		e := entries[re.Line-1]
		re.Line = 0
		return sum, &Error{Line: e.Line, Record: &e.Record, Err: re}
	}
	if err != nil {
		return sum, fmt.Errorf("replay: %w", err)
	}
	return sum, nil
}

// writeStep writes one record and the flow's state after it:
//
//	line 3  seq=3  flow=<id>  flow_seq=2
//	    2026-03-01T10:00:00.004Z  +3ms  url_issued  pending -> awaiting_callback
//	    now: awaiting_callback
func writeStep(w io.Writer, e Entry, s states.Step, prev time.Time) {
	r := s.Record
	fmt.Fprintf(w, "line %d  seq=%d  flow=%s  flow_seq=%d\n", e.Line, r.Seq, r.Flow, r.FlowSeq)
	fmt.Fprintf(w, "    %s\n", strings.TrimRight(states.FormatRecord(r, prev), " "))
	fmt.Fprintf(w, "    now: %s\n", standing(s.Flow))
}

// standing is a flow's state with what qualifies it.
func standing(f states.Flow) string {
	var parts []string
	if f.Exchanging {
		parts = append(parts, "exchanging the code")
	}
	if f.Reason != "" {
		parts = append(parts, string(f.Reason))
	}
	if f.IgnoredCallbacks > 0 {
		parts = append(parts, plural(f.IgnoredCallbacks, "ignored callback"))
	}
	if len(parts) == 0 {
		return string(f.State)
	}
	return fmt.Sprintf("%s (%s)", f.State, strings.Join(parts, ", "))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// writeFinal writes each flow's final standing, in order of first mention.
func writeFinal(w io.Writer, sum Summary) {
	fmt.Fprintf(w, "\n%s, %s\n", plural(sum.Records, "record"), plural(len(sum.Flows), "flow"))
	for _, f := range sum.Flows {
		fmt.Fprintf(w, "\nflow %s\n", f.ID)
		field := func(k, v string) {
			if v != "" {
				fmt.Fprintf(w, "    %-18s %s\n", k+":", v)
			}
		}
		field("state", string(f.State))
		if f.Reason != "" {
			field("reason", fmt.Sprintf("%s (%s)", f.Reason, f.Reason.Describe()))
		} else if f.State.Live() {
			field("reason", "- (still live when the log ends)")
		}
		if f.Exchanging {
			field("exchanging", "true (the log ends during the exchange)")
		}
		field("provider", f.Provider)
		field("account", f.Account)
		field("subject", f.Subject)
		field("email", f.Email)
		field("transport", string(f.Transport))
		field("redirect_uri", f.RedirectURI)
		field("scopes", strings.Join(f.Scopes, " "))
		granted := "-"
		if len(f.GrantedScopes) > 0 {
			granted = strings.Join(f.GrantedScopes, " ")
		}
		field("granted_scopes", granted)
		field("token_stored", fmt.Sprint(f.TokenStored))
		field("message", f.Message)
		field("error_code", f.ErrorCode)
		if f.HTTPStatus != 0 {
			field("http_status", fmt.Sprint(f.HTTPStatus))
		}
		field("superseded_by", f.SupersededBy)
		if f.IgnoredCallbacks > 0 {
			field("ignored_callbacks", fmt.Sprint(f.IgnoredCallbacks))
		}
		if c := f.Conn; c != nil && (c.Refreshes > 0 || c.LastFailure != nil || c.Refreshing || !c.Active()) {
			// Only a connection with token events: the output of logs from
			// before they existed stays as it was.
			field("connection", connectionSummary(*c))
		}
		field("created", stamp(f.Created))
		field("deadline", stamp(f.Deadline))
		field("ended", stamp(f.Ended))
		if !f.Ended.IsZero() && !f.Created.IsZero() {
			field("took", f.Ended.Sub(f.Created).Round(time.Millisecond).String())
		}
	}
}

// connectionSummary is a connection's standing from its records alone:
// its health without the clock (an expired token without a refresh token
// is not judged), refreshes, the last failure, the disconnect.
func connectionSummary(c states.Connection) string {
	if !c.Active() {
		return fmt.Sprintf("disconnected %s (revocation %s; %d refreshes, %d rotated)", stamp(c.Disconnected), c.Revocation, c.Refreshes, c.Rotations)
	}
	out := fmt.Sprintf("%s (%d refreshes, %d rotated", c.HealthAt(time.Time{}), c.Refreshes, c.Rotations)
	if f := c.LastFailure; f != nil {
		out += fmt.Sprintf("; last failure %s http_status=%d transient=%t, failing since %s", f.ErrorCode, f.HTTPStatus, f.Transient, stamp(c.FailingSince))
	}
	if c.Refreshing {
		out += "; a refresh has no outcome when the log ends"
	}
	return out + ")"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// WriteLog writes records as a JSON-lines log, one record a line in the
// order given, each line ending in a newline: the export format Run reads.
// Callers export in global (Seq) order; WriteLog does not sort.
func WriteLog(w io.Writer, recs []states.Record) error {
	bw := bufio.NewWriter(w)
	for _, r := range recs {
		b, err := r.Encode()
		if err != nil {
			return fmt.Errorf("export record seq=%d: %w", r.Seq, err)
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export log: %w", err)
	}
	return nil
}

// Records returns the records of entries, in order.
func Records(entries []Entry) []states.Record {
	out := make([]states.Record, len(entries))
	for i, e := range entries {
		out[i] = e.Record
	}
	return out
}
