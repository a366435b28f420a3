package states

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the generated parts of docs/machine.md")

const machineDoc = "../docs/machine.md"

// generated returns the parts of docs/machine.md that come from the table,
// by the name of the marker pair around them.
func generated() map[string]string {
	return map[string]string{
		"mermaid": "```mermaid\n" + Mermaid() + "```\n",
		"matrix":  matrix(),
	}
}

// matrix renders the table as a Markdown grid: a row per state, a column
// per event, the resulting state in each legal cell.
func matrix() string {
	var b strings.Builder
	b.WriteString("| from \\ event |")
	for _, e := range AllEvents {
		fmt.Fprintf(&b, " `%s` |", e)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|", len(AllEvents)))
	b.WriteByte('\n')
	for _, from := range append([]State{""}, AllStates...) {
		name := "(new)"
		if from != "" {
			name = "`" + string(from) + "`"
		}
		fmt.Fprintf(&b, "| %s |", name)
		for _, e := range AllEvents {
			to, ok := tableNext(from, e)
			switch {
			case !ok:
				b.WriteString(" - |")
			case to == from:
				b.WriteString(" stays |")
			default:
				fmt.Fprintf(&b, " `%s` |", to)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// docs/machine.md is prose around generated parts, each between
// "<!-- BEGIN GENERATED name -->" and "<!-- END GENERATED name -->". The test
// fails when a part no longer matches the table; -update rewrites the parts
// and leaves the prose alone.
func TestMachineDocIsCurrent(t *testing.T) {
	raw, err := os.ReadFile(machineDoc)
	require.NoError(t, err, "docs/machine.md is missing; it is hand-written prose around generated parts")
	doc := string(raw)
	stale := []string{}
	for name, want := range generated() {
		begin := fmt.Sprintf("<!-- BEGIN GENERATED %s -->\n", name)
		end := fmt.Sprintf("<!-- END GENERATED %s -->", name)
		i := strings.Index(doc, begin)
		j := strings.Index(doc, end)
		require.True(t, i >= 0 && j > i, "docs/machine.md lacks the %q and %q markers", strings.TrimSpace(begin), end)
		got := doc[i+len(begin) : j]
		if got == want {
			continue
		}
		stale = append(stale, name)
		doc = doc[:i+len(begin)] + want + doc[j:]
	}
	if len(stale) == 0 {
		return
	}
	if *update {
		abs, _ := filepath.Abs(machineDoc)
		require.NoError(t, os.WriteFile(machineDoc, []byte(doc), 0o644))
		t.Logf("rewrote %v in %s", stale, abs)
		return
	}
	t.Fatalf("docs/machine.md is stale (%v no longer match states.Table); run: go test ./states -run TestMachineDocIsCurrent -update", stale)
}

// The prose of docs/machine.md is hand-written; at least every state, event
// and reason must be named in it, so a new one cannot go undocumented.
func TestMachineDocNamesEverything(t *testing.T) {
	raw, err := os.ReadFile(machineDoc)
	require.NoError(t, err)
	doc := string(raw)
	var names []string
	for _, s := range AllStates {
		names = append(names, string(s))
	}
	for _, e := range AllEvents {
		names = append(names, string(e))
		for _, r := range ReasonsOf(e) {
			names = append(names, string(r))
		}
	}
	names = append(names, string(IgnoredInProgress), string(IgnoredFinished))
	for _, n := range names {
		require.Contains(t, doc, "`"+n+"`", "docs/machine.md does not explain %s", n)
	}
}

// docs/record-format.md is the contract for the stored form: every JSON
// field of Record and Data, and every event, must appear in it.
func TestRecordFormatDocNamesEveryField(t *testing.T) {
	raw, err := os.ReadFile("../docs/record-format.md")
	require.NoError(t, err)
	doc := string(raw)
	names := append(jsonNames(reflect.TypeFor[Record]()), jsonNames(reflect.TypeFor[Data]())...)
	for _, e := range AllEvents {
		names = append(names, string(e))
	}
	require.Greater(t, len(names), 20)
	for _, n := range names {
		require.Contains(t, doc, "`"+n+"`", "docs/record-format.md does not document %s", n)
	}
	require.Contains(t, doc, fmt.Sprintf("schema version **%d**", SchemaVersion), "the doc names the current version")
}

func jsonNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}
