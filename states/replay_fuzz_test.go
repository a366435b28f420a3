package states

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzReplayLog decodes an exported log line by line and replays it
// through the machine. Neither may panic, whatever the bytes; every
// refusal names a record; and a log that replays leaves only flows the
// machine allows: a known state, a terminal flow with a reason its
// ending event may carry and no exchange under way, a live one with no
// reason and a deadline.
func FuzzReplayLog(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "replay", "*.jsonl"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	var happyLog []byte
	for _, r := range happy(testFlow, 1, t0) {
		b, _ := r.Encode()
		happyLog = append(append(happyLog, b...), '\n')
	}
	f.Add(happyLog)
	f.Fuzz(func(t *testing.T, data []byte) {
		var log []Record
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			r, err := Decode(line)
			if err != nil {
				return
			}
			log = append(log, r)
		}
		flows, err := Replay(log, nil)
		if err != nil {
			if _, ok := err.(*RecordError); !ok {
				t.Fatalf("replay error does not name a record: %T %v", err, err)
			}
			return
		}
		for id, fl := range flows {
			switch {
			case !fl.State.Valid():
				t.Fatalf("flow %s replayed to unknown state %q", id, fl.State)
			case fl.Deadline.IsZero():
				t.Fatalf("flow %s replayed without a deadline", id)
			case fl.State.Terminal() && fl.Exchanging:
				t.Fatalf("flow %s ended %s mid-exchange", id, fl.State)
			case fl.State.Live() && fl.Reason != "":
				t.Fatalf("flow %s is %s with reason %s", id, fl.State, fl.Reason)
			case fl.State.Terminal():
				ok := false
				for _, ev := range []Event{ExchangeSucceeded, Failed, DeadlinePassed} {
					to, _ := Next(AwaitingCallback, ev)
					ok = ok || (to == fl.State && slices.Contains(ReasonsOf(ev), fl.Reason))
				}
				if !ok {
					t.Fatalf("flow %s ended %s with reason %q", id, fl.State, fl.Reason)
				}
			}
		}
	})
}
