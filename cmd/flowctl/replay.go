package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// replayRun replays a recorded log and writes each flow's state after each
// record and its final state. It returns an error naming the first bad record.
var replayRun = func(r io.Reader, w io.Writer) error {
	return errors.New("replay is not in this build yet")
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
			if err := replayRun(r, a.stdout); err != nil {
				return fmt.Errorf("replay %s: %w", args[0], err)
			}
			return nil
		},
	}
}
