package replay_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/flowdhq/flowd/replay"
)

// Replaying an exported log: each record with the flow's state after it,
// then each flow's final standing. `flowctl replay log.jsonl` prints the
// same and exits non-zero on an error.
func ExampleRun() {
	log := `{"v":1,"seq":1,"flow":"Q2FuY2VsZWRGbG93MDAwMDAx","flow_seq":1,"event":"created","from":"","to":"pending","time":"2026-03-01T10:00:00Z","data":{"provider":"github","scopes":["repo"],"transport":"manual","redirect_uri":"http://127.0.0.1:8085/oauth/callback","deadline":"2026-03-01T10:05:00Z"}}
{"v":1,"seq":2,"flow":"Q2FuY2VsZWRGbG93MDAwMDAx","flow_seq":2,"event":"url_issued","from":"pending","to":"awaiting_callback","time":"2026-03-01T10:00:00.003Z"}
{"v":1,"seq":3,"flow":"Q2FuY2VsZWRGbG93MDAwMDAx","flow_seq":3,"event":"failed","from":"awaiting_callback","to":"error","time":"2026-03-01T10:00:06.003Z","data":{"reason":"canceled"}}
`
	sum, err := replay.Run(strings.NewReader(log), os.Stdout)
	if err != nil {
		fmt.Println("replay failed:", err)
		return
	}
	fmt.Println(sum.Flows[0].State, sum.Flows[0].Reason)
	// Output:
	// line 1  seq=1  flow=Q2FuY2VsZWRGbG93MDAwMDAx  flow_seq=1
	//     2026-03-01T10:00:00.000Z  -          created             (new) -> pending  provider=github scopes=repo transport=manual redirect_uri=http://127.0.0.1:8085/oauth/callback deadline=2026-03-01T10:05:00Z
	//     now: pending
	// line 2  seq=2  flow=Q2FuY2VsZWRGbG93MDAwMDAx  flow_seq=2
	//     2026-03-01T10:00:00.003Z  +3ms       url_issued          pending -> awaiting_callback
	//     now: awaiting_callback
	// line 3  seq=3  flow=Q2FuY2VsZWRGbG93MDAwMDAx  flow_seq=3
	//     2026-03-01T10:00:06.003Z  +6s        failed              awaiting_callback -> error  reason=canceled
	//     now: error (canceled)
	//
	// 3 records, 1 flow
	//
	// flow Q2FuY2VsZWRGbG93MDAwMDAx
	//     state:             error
	//     reason:            canceled (canceled before the provider's callback arrived)
	//     provider:          github
	//     transport:         manual
	//     redirect_uri:      http://127.0.0.1:8085/oauth/callback
	//     scopes:            repo
	//     granted_scopes:    -
	//     token_stored:      false
	//     created:           2026-03-01T10:00:00.000Z
	//     deadline:          2026-03-01T10:05:00.000Z
	//     ended:             2026-03-01T10:00:06.003Z
	//     took:              6.003s
	// error canceled
}
