package replay

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/states"
)

var update = flag.Bool("update", false, "rewrite the .golden files under testdata/replay from the current machine")

const testdata = "../testdata/replay"

// goodFiles lists the files with the given suffix in testdata/replay and
// every directory under it (engine/, dex/, ...) except broken/, which
// holds the logs that must fail.
func goodFiles(t *testing.T, suffix string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(testdata, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(testdata, "broken") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, suffix) {
			out = append(out, path)
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// Every recorded log in testdata/replay and its subdirectories (broken/
// aside) must replay against the current machine and render exactly as its
// .golden file says: the state after every record, then each flow's
// terminal reason, granted scopes and whether a token was stored. Adding a
// log is adding a file: drop in name.jsonl, run `go test ./replay -update`
// to record name.golden, read it, commit both.
func TestGolden(t *testing.T) {
	logs := goodFiles(t, ".jsonl")
	require.NotEmpty(t, logs, "no recorded logs in %s", testdata)
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.ToSlash(strings.TrimPrefix(path, testdata+string(filepath.Separator))), ".jsonl")
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			var out bytes.Buffer
			sum, err := Run(f, &out)
			require.NoError(t, err, "a recorded log no longer replays: the machine changed the meaning of logs on disk")
			require.Positive(t, sum.Records)

			golden := strings.TrimSuffix(path, ".jsonl") + ".golden"
			if *update {
				require.NoError(t, os.WriteFile(golden, out.Bytes(), 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s has no expectations yet: run `go test ./replay -update`, read %s, commit it", path, golden)
			}
			require.NoError(t, err)
			require.Equal(t, string(want), out.String(), "replay output changed; if intended, run `go test ./replay -update` and review the diff")
		})
	}
}

// Every .golden belongs to a log, so a renamed or deleted log cannot leave
// a stale expectation behind.
func TestGoldenHasLog(t *testing.T) {
	for _, g := range goodFiles(t, ".golden") {
		_, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".jsonl")
		assert.NoError(t, err, "%s has no log", g)
	}
}

// The sentinels a broken log's sidecar may name.
var sentinelNames = map[string]error{
	"states.ErrUnknownEvent":       states.ErrUnknownEvent,
	"states.ErrUnknownState":       states.ErrUnknownState,
	"states.ErrIllegalTransition":  states.ErrIllegalTransition,
	"states.ErrMissingDeadline":    states.ErrMissingDeadline,
	"states.ErrBadReason":          states.ErrBadReason,
	"states.ErrWrongFlow":          states.ErrWrongFlow,
	"states.ErrSequenceGap":        states.ErrSequenceGap,
	"states.ErrOutOfOrder":         states.ErrOutOfOrder,
	"states.ErrDuplicateSequence":  states.ErrDuplicateSequence,
	"states.ErrUnsupportedVersion": states.ErrUnsupportedVersion,
	"states.ErrUndecodable":        states.ErrUndecodable,
	"replay.ErrTruncated":          ErrTruncated,
	"replay.ErrLineTooLong":        ErrLineTooLong,
}

// want is a broken log's sidecar: the sentinel its replay must fail with
// and the line it must name.
type want struct {
	err  string
	line int
}

func readWant(t *testing.T, path string) want {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err, "every broken log needs a .want sidecar naming its error and line")
	defer f.Close()
	var w want
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		require.True(t, ok, "%s: %q is not key: value", path, line)
		switch strings.TrimSpace(k) {
		case "error":
			w.err = strings.TrimSpace(v)
		case "line":
			w.line, err = strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err, "%s: line", path)
		default:
			t.Fatalf("%s: unknown key %q (want error, line)", path, k)
		}
	}
	require.NoError(t, sc.Err())
	require.Contains(t, sentinelNames, w.err, "%s names an unknown sentinel", path)
	require.Positive(t, w.line, "%s: line", path)
	return w
}

// Every deliberately broken log in testdata/replay/broken must fail with
// its own specific error, and the error must name the line.
func TestBroken(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join(testdata, "broken", "*.jsonl"))
	require.NoError(t, err)
	require.NotEmpty(t, logs)
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		t.Run(name, func(t *testing.T) {
			w := readWant(t, strings.TrimSuffix(path, ".jsonl")+".want")
			sentinel := sentinelNames[w.err]
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			var out bytes.Buffer
			sum, err := Run(f, &out)
			require.Error(t, err, "a broken log replayed cleanly")
			require.ErrorIs(t, err, sentinel, "got %v", err)
			for other, s := range sentinelNames {
				if s != sentinel && !errors.Is(sentinel, s) {
					assert.NotErrorIs(t, err, s, "%v also matches %s", err, other)
				}
			}
			var re *Error
			require.ErrorAs(t, err, &re)
			assert.Equal(t, w.line, re.Line, "%v", err)
			assert.True(t, strings.HasPrefix(err.Error(), fmt.Sprintf("line %d: ", w.line)), "the message names the line: %v", err)
			assert.NotContains(t, out.String(), fmt.Sprintf("line %d ", w.line), "the bad record is not rendered as replayed")
			assert.NotContains(t, out.String(), "\nflow ", "no final standing after an error")
			assert.Less(t, sum.Records, w.line)
		})
	}
}

// Every broken log has a sidecar and every sidecar a log.
func TestBrokenSidecars(t *testing.T) {
	wants, err := filepath.Glob(filepath.Join(testdata, "broken", "*.want"))
	require.NoError(t, err)
	logs, err := filepath.Glob(filepath.Join(testdata, "broken", "*.jsonl"))
	require.NoError(t, err)
	assert.Equal(t, len(logs), len(wants))
	for _, w := range wants {
		_, err := os.Stat(strings.TrimSuffix(w, ".want") + ".jsonl")
		assert.NoError(t, err, "%s has no log", w)
	}
}

// The corpus covers each failure the issue names, each with its own error.
func TestBrokenCoverage(t *testing.T) {
	need := []string{"states.ErrOutOfOrder", "states.ErrIllegalTransition", "states.ErrDuplicateSequence",
		"states.ErrUnsupportedVersion", "replay.ErrTruncated", "states.ErrMissingDeadline", "states.ErrUnknownEvent"}
	wants, err := filepath.Glob(filepath.Join(testdata, "broken", "*.want"))
	require.NoError(t, err)
	have := map[string]bool{}
	for _, p := range wants {
		have[readWant(t, p).err] = true
	}
	for _, n := range need {
		assert.True(t, have[n], "no broken log fails with %s", n)
	}
}
