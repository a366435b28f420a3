package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/states"
)

// scenarioLog builds one of the generator's scenarios in memory.
func scenarioLog(t *testing.T, name string) ([]states.Record, string) {
	t.Helper()
	l := newLog(t)
	scenarios[name](l)
	var b strings.Builder
	require.NoError(t, WriteLog(&b, l.recs))
	return l.recs, b.String()
}

func run(t *testing.T, log string) (Summary, string, error) {
	t.Helper()
	var out bytes.Buffer
	sum, err := Run(strings.NewReader(log), &out)
	return sum, out.String(), err
}

func TestRunSummary(t *testing.T) {
	_, log := scenarioLog(t, "superseded")
	sum, out, err := run(t, log)
	require.NoError(t, err)
	assert.Equal(t, 7, sum.Records)
	require.Len(t, sum.Flows, 2)
	first, second := sum.Flows[0], sum.Flows[1]
	assert.Equal(t, flowID("superseded_first"), first.ID, "flows come in order of first mention")
	assert.Equal(t, states.Superseded, first.Reason)
	assert.Equal(t, second.ID, first.SupersededBy)
	assert.Equal(t, states.Complete, second.State)
	assert.True(t, second.TokenStored)
	assert.Equal(t, []string{"repo"}, second.GrantedScopes)

	got, ok := sum.Flow(second.ID)
	assert.True(t, ok)
	assert.Equal(t, second, got)
	_, ok = sum.Flow("nope")
	assert.False(t, ok)

	assert.Equal(t, 7, strings.Count(out, "\n    now: "), "one state line per record")
	assert.Contains(t, out, "\n7 records, 2 flows\n")
}

func TestRunIsDeterministic(t *testing.T) {
	_, log := scenarioLog(t, "interleaved_daemon")
	_, a, err := run(t, log)
	require.NoError(t, err)
	_, b, err := run(t, log)
	require.NoError(t, err)
	assert.Equal(t, a, b)
}

// A log written by WriteLog reads back record for record, with its lines.
func TestWriteReadRoundTrip(t *testing.T) {
	recs, log := scenarioLog(t, "late_callback")
	assert.Equal(t, len(recs), strings.Count(log, "\n"), "one line per record")
	assert.True(t, strings.HasSuffix(log, "}\n"))
	entries, err := ReadLog(strings.NewReader(log))
	require.NoError(t, err)
	assert.Equal(t, recs, Records(entries))
	for i, e := range entries {
		assert.Equal(t, i+1, e.Line)
	}
}

// Blank lines and CRLF line ends (a log that passed through an editor or
// a Windows machine) replay, and line numbers still match the file.
func TestRunBlankLinesAndCRLF(t *testing.T) {
	_, log := scenarioLog(t, "happy_loopback")
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	messy := "\r\n" + strings.Join(lines[:2], "\r\n") + "\r\n   \r\n" + strings.Join(lines[2:], "\r\n")
	sum, out, err := run(t, messy)
	require.NoError(t, err)
	assert.Equal(t, 4, sum.Records)
	assert.Contains(t, out, "line 2  seq=1")
	assert.Contains(t, out, "line 5  seq=3", "blank lines count")

	// And a broken record after them is named by its line in the file.
	broken := messy + "\r\n\r\n" + `{"v":7}`
	_, _, err = run(t, broken)
	var re *Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 8, re.Line)
	assert.ErrorIs(t, err, states.ErrUnsupportedVersion)
	assert.Nil(t, re.Record, "the line did not decode")
}

// Problems are reported in file order: an illegal transition on an early
// line wins over damage further down.
func TestRunReportsFirstProblem(t *testing.T) {
	_, log := scenarioLog(t, "happy_loopback")
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	lines[1] = strings.Replace(lines[1], `"event":"url_issued"`, `"event":"exchange_started"`, 1)
	lines[3] = lines[3][:20]
	sum, out, err := run(t, strings.Join(lines, "\n"))
	require.ErrorIs(t, err, states.ErrIllegalTransition)
	var re *Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 2, re.Line)
	require.NotNil(t, re.Record)
	assert.Equal(t, states.ExchangeStarted, re.Record.Event)
	var rec *states.RecordError
	require.ErrorAs(t, err, &rec, "the record error is in the chain")
	assert.Equal(t, 1, sum.Records)
	assert.Equal(t, states.Pending, sum.Flows[0].State, "the summary stops before the bad record")
	assert.Contains(t, out, "line 1 ")
	assert.NotContains(t, out, "line 2 ")

	// With the early problem fixed, the damage is what is reported.
	_, log = scenarioLog(t, "happy_loopback")
	lines = strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	lines[3] = lines[3][:20]
	_, out, err = run(t, strings.Join(lines, "\n"))
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 4, re.Line)
	assert.Contains(t, err.Error(), "export the log again")
	assert.Contains(t, out, "line 3 ", "the records before the damage are shown")
}

func TestRunTruncatedInTheMiddle(t *testing.T) {
	_, log := scenarioLog(t, "happy_loopback")
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	lines[1] = lines[1][:30]
	_, _, err := run(t, strings.Join(lines, "\n")+"\n")
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorIs(t, err, states.ErrUndecodable, "a truncated line is also undecodable")
	assert.Contains(t, err.Error(), "line 2: ")
	assert.Contains(t, err.Error(), "damaged")
}

// A last line that ends without a newline is still a record.
func TestRunNoFinalNewline(t *testing.T) {
	_, log := scenarioLog(t, "canceled")
	sum, _, err := run(t, strings.TrimSuffix(log, "\n"))
	require.NoError(t, err)
	assert.Equal(t, states.Canceled, sum.Flows[0].Reason)
}

func TestRunEmpty(t *testing.T) {
	for _, log := range []string{"", "\n\n", "  \n"} {
		sum, out, err := run(t, log)
		require.NoError(t, err)
		assert.Zero(t, sum.Records)
		assert.Equal(t, "\n0 records, 0 flows\n", out)
	}
}

func TestRunLineTooLong(t *testing.T) {
	_, log := scenarioLog(t, "canceled")
	long := log + `{"v":1,"flow":"` + strings.Repeat("a", MaxLine) + `"}` + "\n"
	_, _, err := run(t, long)
	require.ErrorIs(t, err, ErrLineTooLong)
	var re *Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 4, re.Line)
}

// A line just under the limit is read whole, across bufio's buffer.
func TestRunLongLineWithinLimit(t *testing.T) {
	recs, _ := scenarioLog(t, "canceled")
	recs[2].Data.Message = strings.Repeat("x", 100_000)
	var b strings.Builder
	require.NoError(t, WriteLog(&b, recs))
	sum, _, err := run(t, b.String())
	require.NoError(t, err)
	assert.Len(t, sum.Flows[0].Message, 100_000)
}

func TestRunReadError(t *testing.T) {
	_, log := scenarioLog(t, "canceled")
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader(log), iotest.ErrReader(boom))
	_, err := Run(r, io.Discard)
	require.ErrorIs(t, err, boom)
	var re *Error
	assert.False(t, errors.As(err, &re), "an I/O error is not a problem of the log")
	assert.Contains(t, err.Error(), "read log at line 4")
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("pipe closed") }

func TestRunWriteError(t *testing.T) {
	_, log := scenarioLog(t, "canceled")
	_, err := Run(strings.NewReader(log), failWriter{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "write replay output: pipe closed")
	assert.Error(t, WriteLog(failWriter{}, []states.Record{{Flow: "f"}}))
}

func TestErrorMessage(t *testing.T) {
	err := &Error{Line: 12, Err: fmt.Errorf("%w: x", states.ErrUndecodable)}
	assert.Equal(t, "line 12: undecodable record: x", err.Error())
	assert.ErrorIs(t, err, states.ErrUndecodable)
	assert.ErrorIs(t, ErrTruncated, states.ErrUndecodable)
	assert.ErrorIs(t, ErrLineTooLong, states.ErrUndecodable)
	assert.NotErrorIs(t, ErrTruncated, ErrLineTooLong)
}

// Recorded logs are attached to bug reports and checked in: nothing in
// testdata may look like a secret. Decode already refuses any field outside
// the schema; this checks the values of the one correlating field.
func TestTestdataHoldsFingerprintsOnly(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join(testdata, "*.jsonl"))
	require.NoError(t, err)
	for _, p := range logs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		entries, err := ReadLog(bytes.NewReader(b))
		require.NoError(t, err, p)
		for _, e := range entries {
			if fp := e.Record.Data.CodeFingerprint; fp != "" {
				assert.Regexp(t, `^[a-z0-9]+:[0-9a-f]{8,64}$`, fp, "%s line %d: code_fp must be a fingerprint", p, e.Line)
			}
		}
	}
}

// Run must never panic, whatever the file holds, and an error is always
// either an *Error naming a line or nothing.
func FuzzRun(f *testing.F) {
	for _, dir := range []string{testdata, filepath.Join(testdata, "broken")} {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
		for _, p := range logs {
			b, err := os.ReadFile(p)
			if err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sum, err := Run(bytes.NewReader(b), io.Discard)
		if err == nil {
			return
		}
		var re *Error
		if !errors.As(err, &re) {
			t.Fatalf("error without a line: %v", err)
		}
		if re.Line < 1 || !strings.HasPrefix(err.Error(), fmt.Sprintf("line %d: ", re.Line)) {
			t.Fatalf("bad line in %v", err)
		}
		if sum.Records >= re.Line {
			t.Fatalf("%d records replayed before line %d", sum.Records, re.Line)
		}
	})
}
