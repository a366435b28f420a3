package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/client"
)

func (a *app) logCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Work with flowd's event log",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("log needs a subcommand: flowctl log export")
		},
	}
	cmd.AddCommand(a.logExportCmd())
	return cmd
}

func (a *app) logExportCmd() *cobra.Command {
	var flow, since string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the event log as JSON lines, in global order",
		Long: `export writes flowd's event log to stdout as JSON lines in the documented,
versioned record format (docs/record-format.md), in global order. Records
carry no secrets, only fingerprints, so an export is safe to attach to a bug
report. Its output is already JSON; --json changes nothing.

--flow takes a state, a unique prefix or a callback URL. --since takes a time
(RFC 3339, e.g. 2025-01-31T14:00:00Z) or a duration back from now (e.g. 2h).`,
		Example: `  flowctl log export > log.jsonl
  flowctl log export --flow 3fa9c1d2 > flow.jsonl
  flowctl log export --since 2h | flowctl replay -`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			var after time.Time
			if since != "" {
				t, err := parseSince(since, a.now())
				if err != nil {
					return err
				}
				after = t
			}
			return a.export(cmd.Context(), flow, after)
		},
	}
	cmd.Flags().StringVar(&flow, "flow", "", "only this flow's records (state, unique prefix or callback URL)")
	cmd.Flags().StringVar(&since, "since", "", "only records at or after this time (RFC 3339) or this long ago (duration)")
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--since %q: give a positive duration, like 2h", s)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--since %q is neither a time (RFC 3339, like 2025-01-31T14:00:00Z) nor a duration (like 2h)", s)
}

func (a *app) export(ctx context.Context, flowArg string, since time.Time) error {
	cl := a.client()
	defer cl.Close()
	w := bufio.NewWriter(a.stdout)
	defer w.Flush()

	flow := ""
	if flowArg != "" {
		// Resolve prefixes and URLs up front through the history route, so
		// the export asks for one exact state.
		var err error
		flow, err = withState(ctx, a, cl, flowArg, func(state string) (string, error) {
			h, err := cl.History(ctx, state)
			if h.State == "" {
				return state, err
			}
			return h.State, err
		})
		if err != nil {
			return fmt.Errorf("export flow %s: %w", flowArg, err)
		}
	}

	body, err := cl.Export(ctx, client.ExportQuery{Flow: flow, Since: since})
	if err != nil {
		return fmt.Errorf("export the log: %w", err)
	}
	defer body.Close()
	if _, err := io.Copy(w, body); err != nil {
		return fmt.Errorf("export the log: reading flowd's answer (the export is incomplete): %w", err)
	}
	return w.Flush()
}
