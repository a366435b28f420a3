package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/replay"
)

// replayResult is replay's --json output.
type replayResult struct {
	// Records counts the records replayed without error.
	Records int `json:"records"`
	// Flows is each flow as the replay left it, in first-mention order.
	Flows []wire.Flow `json:"flows"`
	// Error names the first bad record; absent when the log replays.
	Error *replayError `json:"error,omitempty"`
}

type replayError struct {
	// Line is the 1-based line of the log, 0 when reading the file failed.
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

func (a *app) replay(r io.Reader, name string) error {
	w := a.stdout
	if a.json {
		w = io.Discard
	}
	sum, err := replay.Run(r, w)
	if !a.json {
		if err != nil {
			return fmt.Errorf("replay %s: %w", name, err)
		}
		return nil
	}
	res := replayResult{Records: sum.Records, Flows: make([]wire.Flow, 0, len(sum.Flows))}
	for _, f := range sum.Flows {
		res.Flows = append(res.Flows, wire.FlowFrom(f))
	}
	if err != nil {
		res.Error = &replayError{Message: err.Error()}
		var re *replay.Error
		if errors.As(err, &re) {
			res.Error.Line = re.Line
		}
	}
	if werr := a.writeJSON(res); werr != nil {
		return werr
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "replay %s: %v\n", name, err)
		return silentExit(ExitFailed)
	}
	return nil
}

func (a *app) replayCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "replay <log.jsonl | ->",
		Short: "Replay a recorded log through the current machine",
		Long: `replay feeds a recorded log (from 'flowctl log export') through the current
state machine, printing each flow's state after each record and its final
state. It exits 1 naming the record at the first illegal transition, unknown
event, out-of-order or duplicated sequence, missing deadline or unsupported
schema version. It needs no flowd. "-" reads stdin.`,
		Example: `  flowctl replay log.jsonl
  flowctl log export --flow 3fa9c1d2 | flowctl replay -`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = a.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("replay: %w", err)
				}
				defer f.Close()
				r = f
			}
			return a.replay(r, args[0])
		},
	}
}
