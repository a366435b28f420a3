package states

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const otherFlow = "b3RoZXJGbG93VG9rZW4wMDAy"

// interleaved returns two happy flows whose records alternate in global
// order, the way a daemon serving two users writes them.
func interleaved() []Record {
	a := happy(testFlow, 1, t0)
	b := happy(otherFlow, 1, t0)
	var log []Record
	for i := range a {
		log = append(log, a[i], b[i])
	}
	for i := range log {
		log[i].Seq = uint64(i + 1)
	}
	return log
}

func TestReplayInterleaved(t *testing.T) {
	log := interleaved()
	var steps []Step
	flows, err := Replay(log, func(s Step) error {
		steps = append(steps, s)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, steps, len(log), "one step per record")
	for i, s := range steps {
		assert.Equal(t, log[i], s.Record)
		assert.Equal(t, log[i].To, s.Flow.State, "step %d shows the flow after its record", i)
		assert.Equal(t, log[i].Flow, s.Flow.ID)
	}
	require.Len(t, flows, 2)
	for _, id := range []string{testFlow, otherFlow} {
		assert.Equal(t, Complete, flows[id].State)
		assert.True(t, flows[id].TokenStored)
	}
}

// Pruning and filtered exports leave gaps in the global sequence; replay
// must accept them.
func TestReplayAllowsSeqGaps(t *testing.T) {
	log := happy(testFlow, 1, t0)
	for i := range log {
		log[i].Seq = uint64(10 * (i + 1))
	}
	flows, err := Replay(log, nil)
	require.NoError(t, err)
	assert.Equal(t, Complete, flows[testFlow].State)
}

func TestReplayRefuses(t *testing.T) {
	cases := []struct {
		name   string
		mangle func([]Record) []Record
		want   error
		line   int
	}{
		{"duplicated record", func(l []Record) []Record {
			return append(l[:4:4], append([]Record{l[3]}, l[4:]...)...)
		}, ErrDuplicateSequence, 5},
		{"duplicated seq across flows", func(l []Record) []Record { l[3].Seq = l[2].Seq; return l }, ErrDuplicateSequence, 4},
		{"records swapped", func(l []Record) []Record { l[4], l[5] = l[5], l[4]; return l }, ErrOutOfOrder, 6},
		{"seq going back", func(l []Record) []Record { l[6].Seq = 2; return l }, ErrOutOfOrder, 7},
		{"flow records renumbered out of flow order", func(l []Record) []Record {
			// Seq is fine but the flow's own records come in the wrong order.
			l[2], l[4] = l[4], l[2]
			l[2].Seq, l[4].Seq = 3, 5
			return l
		}, ErrSequenceGap, 3},
		{"illegal transition", func(l []Record) []Record { l[2].Event = ExchangeSucceeded; l[2].To = Complete; return l }, ErrIllegalTransition, 3},
		{"missing deadline", func(l []Record) []Record { l[1].Data.Deadline = nil; return l }, ErrMissingDeadline, 2},
		{"unknown event", func(l []Record) []Record { l[5].Event = "exchange_retried"; return l }, ErrUnknownEvent, 6},
		{"old version in memory", func(l []Record) []Record { l[7].Version = 0; return l }, ErrUnsupportedVersion, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log := c.mangle(interleaved())
			steps := 0
			_, err := Replay(log, func(Step) error { steps++; return nil })
			requireOnly(t, err, c.want)
			var re *RecordError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.line, re.Line, "the error names the record's position: %v", err)
			assert.Contains(t, err.Error(), "line ")
			assert.Equal(t, c.line-1, steps, "replay stops at the first bad record")
		})
	}
}

func TestReplayStepErrorStops(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	_, err := Replay(interleaved(), func(Step) error {
		n++
		if n == 3 {
			return boom
		}
		return nil
	})
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, 3, n)
}

func TestReplayEmpty(t *testing.T) {
	flows, err := Replay(nil, nil)
	require.NoError(t, err)
	assert.Empty(t, flows)
}

func TestRecordErrorMessage(t *testing.T) {
	err := &RecordError{Line: 12, Seq: 40, Flow: testFlow, FlowSeq: 3, Err: ErrMissingDeadline}
	assert.Equal(t, "line 12: record seq=40 flow=Zk1vY2tTdGF0… flow_seq=3: first record carries no deadline", err.Error())
	err.Line = 0
	assert.Equal(t, "record seq=40 flow=Zk1vY2tTdGF0… flow_seq=3: first record carries no deadline", err.Error())
	assert.Equal(t, "short", ShortID("short"))
}
