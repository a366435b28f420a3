package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

// dbOpenTimeout bounds the wait for a database file's lock. A running flowd
// holds the lock for good, so waiting longer only delays the answer.
const dbOpenTimeout = 100 * time.Millisecond

func (a *app) inspectCmd() *cobra.Command {
	var dbPath string
	cmd := &cobra.Command{
		Use:   "inspect <state | callback URL | prefix>",
		Short: "Show a flow's history, step by step, and where it stands",
		Long: `inspect prints a flow's history in order: time, time since the previous
event, event, from -> to, and the event's data (terminal reason, provider
message, exchange HTTP status, granted scopes, transport, redirect URI; only
fingerprints of anything secret). Then the flow's current state, deadline and
time left.

` + stateArgHelp + `

It asks flowd. With --db it reads a flowd database file directly, read-only,
for when flowd is not running; a running flowd holds the file, so drop --db
then.`,
		Example: `  flowctl inspect 3fa9c1d2
  flowctl inspect 'http://127.0.0.1:8085/oauth/callback?code=…&state=3fa9c1d2…'
  flowctl inspect 3fa9 --db ~/.local/state/flowd/flowd.db --json`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var (
				recs   []states.Record
				source string
				err    error
			)
			if dbPath != "" {
				recs, err = a.historyFromDB(ctx, dbPath, args[0])
				source = "db:" + dbPath
			} else {
				recs, err = a.historyFromFlowd(ctx, args[0])
				source = "flowd"
			}
			if err != nil {
				return err
			}
			return a.printInspect(recs, source)
		},
	}
	cmd.Flags().StringVar(&dbPath, "db", "", "read this flowd database file directly, read-only (only while flowd is stopped)")
	return cmd
}

func (a *app) historyFromFlowd(ctx context.Context, arg string) ([]states.Record, error) {
	cl := a.client()
	defer cl.Close()
	h, err := withState(ctx, a, cl, arg, func(state string) (wire.HistoryResponse, error) {
		return cl.History(ctx, state)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", arg, err)
	}
	if len(h.Records) == 0 {
		return nil, fmt.Errorf("inspect %s: flowd has no records for it (pruned after its retention?)", arg)
	}
	return h.Records, nil
}

// inspectResult is inspect's --json output.
type inspectResult struct {
	State string `json:"state"`
	// Source is "flowd" or "db:<path>".
	Source string `json:"source"`
	// Flow is what the history adds up to through the current machine.
	Flow wire.Flow `json:"flow"`
	// TimeLeft is the time until the deadline of a live flow.
	TimeLeft string          `json:"time_left,omitempty"`
	Records  []states.Record `json:"records"`
	// ReplayError is set when the history does not replay through the
	// current machine; Flow is then the flow up to the bad record.
	ReplayError string `json:"replay_error,omitempty"`
}

func (a *app) printInspect(recs []states.Record, source string) error {
	flow, ferr := states.Fold(recs)
	now := a.now()
	res := inspectResult{State: recs[0].Flow, Source: source, Flow: wire.FlowFrom(flow), Records: recs}
	if ferr != nil {
		res.ReplayError = ferr.Error()
	}
	if flow.State.Live() {
		res.TimeLeft = max(flow.Deadline.Sub(now), 0).Round(time.Second).String()
	}
	if a.json {
		if err := a.writeJSON(res); err != nil {
			return err
		}
	} else {
		a.printHistory(a.stdout, recs)
		fmt.Fprintln(a.stdout)
		a.printFlow(a.stdout, res.Flow)
		if flow.Conn != nil {
			fmt.Fprint(a.stdout, states.FormatConnection(*flow.Conn, now))
		}
	}
	if ferr != nil {
		return fmt.Errorf("this history does not replay through the current machine (a bug worth reporting with 'flowctl log export --flow %s'): %w", res.State, ferr)
	}
	return nil
}

// printHistory prints records as an aligned table.
func (a *app) printHistory(w io.Writer, recs []states.Record) {
	tw := newTable(w, 2)
	fmt.Fprintln(tw, "TIME\tSINCE PREV\tEVENT\tFROM -> TO\tDATA")
	var prev time.Time
	for _, r := range recs {
		since := "-"
		if !prev.IsZero() {
			since = "+" + r.Time.Sub(prev).Round(time.Millisecond).String()
		}
		prev = r.Time
		from := string(r.From)
		if from == "" {
			from = "(new)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s -> %s\t%s\n", r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), since, r.Event, from, r.To, states.FormatData(r.Data))
	}
	_ = tw.Flush()
}

// errDBHeld is returned when a running flowd holds the database file's lock.
var errDBHeld = errors.New("flowd is running and holds the database")
