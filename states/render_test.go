package states

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Both diagrams draw exactly the table: every legal (state, event) pair is an
// edge, and nothing else is.
func TestDiagramsDrawTheTable(t *testing.T) {
	mermaid, dot := Mermaid(), DOT()
	assert.True(t, strings.HasPrefix(mermaid, "stateDiagram-v2\n"))
	assert.True(t, strings.HasPrefix(dot, "digraph flowd {"))
	assert.True(t, strings.HasSuffix(dot, "}\n"))
	edges := 0
	for _, from := range append([]State{""}, AllStates...) {
		for _, e := range AllEvents {
			to, ok := tableNext(from, e)
			if !ok {
				continue
			}
			edges++
			mFrom, dFrom := string(from), string(from)
			if from == "" {
				mFrom, dFrom = "[*]", "new"
			}
			assert.Contains(t, mermaid, fmt.Sprintf("    %s --> %s: %s", mFrom, to, e))
			assert.Contains(t, dot, fmt.Sprintf("    %s -> %s [label=\"%s", dFrom, to, e))
		}
	}
	assert.Equal(t, edges, strings.Count(mermaid, ": "), "no edge beyond the table's")
	assert.Equal(t, edges, strings.Count(dot, " -> "), "no edge beyond the table's")
	for _, s := range AllStates {
		assert.Equal(t, s.Terminal(), strings.Contains(mermaid, fmt.Sprintf("    %s --> [*]\n", s)), "%s ends the diagram iff terminal", s)
	}
	for _, r := range ReasonsOf(Failed) {
		assert.Contains(t, mermaid, string(r), "failure reasons label the edge")
	}
	assert.Equal(t, mermaid, Mermaid(), "rendering is deterministic")
	assert.Equal(t, dot, DOT(), "rendering is deterministic")
}

func TestFormatRecord(t *testing.T) {
	h := happy(testFlow, 1, t0)
	assert.Equal(t,
		"2026-03-01T10:00:01.000Z  -          created             (new) -> pending  provider=github scopes=repo transport=loopback redirect_uri=http://127.0.0.1:8085/oauth/callback deadline=2026-03-01T10:05:00Z",
		FormatRecord(h[0], time.Time{}))
	assert.Equal(t,
		"2026-03-01T10:00:04.000Z  +1s        exchange_succeeded  awaiting_callback -> complete  reason=exchanged granted_scopes=repo token_stored=true",
		FormatRecord(h[3], h[2].Time))

	d := dataFor(Failed, "provider_denied")
	assert.Equal(t, `reason=provider_denied message="The user denied the request" error_code=access_denied`, FormatData(d))
	assert.Equal(t, "", FormatData(Data{}))
	assert.Equal(t, "reason=exchange_failed message=\"say \\\"no\\\"\" http_status=502",
		FormatData(Data{Reason: ExchangeFailed, Message: `say "no"`, HTTPStatus: 502}))
}

// The time left is relative to the caller's clock, never the machine's.
func TestFormatFlow(t *testing.T) {
	h := happy(testFlow, 1, t0)
	awaiting := mustFold(t, h[:2]...)
	out := FormatFlow(awaiting, t0.Add(time.Minute))
	assert.Equal(t, "state:    awaiting_callback\ndeadline: 2026-03-01T10:05:00Z (4m0s left)\n", out)
	out = FormatFlow(awaiting, t0.Add(7*time.Minute))
	assert.Contains(t, out, "(passed 2m0s ago)")

	exchanging := mustFold(t, h[:3]...)
	assert.Contains(t, FormatFlow(exchanging, t0), "(exchanging the code)")

	done := mustFold(t, h...)
	out = FormatFlow(done, t0.Add(time.Hour))
	assert.Equal(t, "state:    complete (exchanged: connected)\ndeadline: 2026-03-01T10:05:00Z\n"+
		"connection: healthy\ntoken:    expires none, refresh token none, last refresh never (0 refreshes, 0 rotated)\n", out,
		"a finished flow has no time left; a complete one shows its connection")
}

func TestFormatHistory(t *testing.T) {
	h := happy(testFlow, 1, t0)
	out := FormatHistory(h, t0)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(h)+4, "the records, state, deadline, and the connection's two lines")
	assert.Contains(t, lines[1], "+1s")
	assert.Equal(t, "state:    complete (exchanged: connected)", lines[4])

	h[3].From = Pending
	out = FormatHistory(h, t0)
	assert.Contains(t, out, "history does not replay: ")
	assert.Contains(t, out, "illegal transition")
}
