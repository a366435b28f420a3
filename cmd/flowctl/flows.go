package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/client"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

const stateArgHelp = `<state> is a flow's state, a unique prefix of it (as 'flowctl list' shows),
or the whole callback URL the browser ended on. A state beginning with '-'
(older flowd issued some) is taken as the state, not as flags; a shorter
prefix beginning with '-' needs "--" before it: flowctl status -- -3fa9`

func (a *app) statusCmd() *cobra.Command {
	var wait time.Duration
	var account string
	cmd := &cobra.Command{
		Use:   "status [<provider> | <state>]",
		Short: "Show your connections, or a flow as it stands",
		Long: `status with no argument lists every connection flowd holds: provider,
account, granted scopes, when the access token expires, whether a refresh
token is held, health and the last refresh. Health is healthy,
refresh_failing (the provider's error and since when) or needs_reconnect
(the provider rejected the refresh token with invalid_grant, or the token
expired with no refresh token). status <provider> lists that provider's,
and --account narrows the list to one account.

status <state> shows a flow's status, provider, scopes, deadline and, once it
has ended, why. With --wait it waits up to that long for the flow to end first.

` + stateArgHelp + `

Exit code 1 when the flow ended in error or expired, or when a listed
connection is not healthy.`,
		Example: `  flowctl status
  flowctl status github --json
  flowctl status github --account octocat
  flowctl status 3fa9c1d2
  flowctl status 3fa9c1d2 --wait 2m --json`,
		Args: argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait < 0 {
				return usagef("--wait must not be negative")
			}
			ctx := cmd.Context()
			cl := a.client()
			defer cl.Close()
			if len(args) == 0 {
				return a.connections(ctx, cl, "", account)
			}
			// A provider's name lists its connections; anything flowd does
			// not know as a provider is taken for a flow's state.
			if cs, err := cl.Connections(ctx, args[0]); !isUnknownProvider(err) {
				return a.printConnectionsResult(ofAccount(cs, account), err, args[0])
			}
			if account != "" {
				return usagef("--account selects a connection: use it with a provider, like flowctl status github --account %s", account)
			}
			f, err := withState(ctx, a, cl, args[0], func(state string) (wire.Flow, error) {
				return a.statusWait(ctx, cl, state, wait)
			})
			if err != nil {
				if ctx.Err() != nil {
					return &exitError{ExitInterrupted, errors.New("interrupted; the flow goes on in flowd")}
				}
				return err
			}
			if a.json {
				if err := a.writeJSON(f); err != nil {
					return err
				}
			} else {
				a.printFlow(a.stdout, f)
			}
			if f.Terminal && f.Status != string(states.Complete) {
				return silentExit(ExitFailed)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the flow to end (e.g. 30s, 2m)")
	cmd.Flags().StringVar(&account, "account", "", "list only this account's connection")
	return cmd
}

// ofAccount keeps the connections of account ("": all of them).
func ofAccount(cs []wire.Connection, account string) []wire.Connection {
	if account == "" {
		return cs
	}
	var out []wire.Connection
	for _, c := range cs {
		if c.Account == account {
			out = append(out, c)
		}
	}
	return out
}

// isUnknownProvider reports whether flowd answered unknown_provider, or
// has no connections route at all (an older flowd: 404 without a code).
func isUnknownProvider(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && (ae.Code == wire.CodeUnknownProvider || ae.Status == http.StatusNotFound && ae.Code == "")
}

// connections prints the connections, all or provider's, all or account's.
func (a *app) connections(ctx context.Context, cl *client.Client, provider, account string) error {
	cs, err := cl.Connections(ctx, provider)
	return a.printConnectionsResult(ofAccount(cs, account), err, provider)
}

// printConnectionsResult prints what Connections returned; exit code 1
// when a connection is not healthy.
func (a *app) printConnectionsResult(cs []wire.Connection, err error, provider string) error {
	if err != nil {
		return fmt.Errorf("list connections: %w", err)
	}
	if a.json {
		if err := a.writeJSON(wire.ConnectionsResponse{Connections: cs}); err != nil {
			return err
		}
	} else {
		a.printConnections(a.stdout, cs, provider)
	}
	for _, c := range cs {
		if c.Health != string(states.Healthy) {
			return silentExit(ExitFailed)
		}
	}
	return nil
}

// printConnections prints one block per connection.
func (a *app) printConnections(w io.Writer, cs []wire.Connection, provider string) {
	if len(cs) == 0 {
		what := "any provider"
		if provider != "" {
			what = provider
		}
		fmt.Fprintf(w, "Not connected to %s. Connect with: flowctl connect <provider>\n", what)
		return
	}
	now := a.now()
	when := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		d := t.Sub(now)
		if d >= 0 {
			return fmt.Sprintf("%s (in %s)", t.Local().Format(time.DateTime), formatAgo(d))
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), formatAgo(-d))
	}
	for i, c := range cs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := newTable(w, 1)
		row := func(k, v string) {
			if v != "" {
				fmt.Fprintf(tw, "%s:\t%s\n", k, v)
			}
		}
		row("provider", c.Provider)
		account := c.Account
		if account == "" {
			account = "(local user)"
		}
		row("account", account)
		health := c.Health
		switch c.Health {
		case string(states.RefreshFailing), string(states.NeedsReconnect):
			if c.ErrorCode != "" {
				kind := "rejected"
				if c.Transient {
					kind = "transient"
				}
				health += fmt.Sprintf(": %s %s", kind, c.ErrorCode)
				if c.HTTPStatus != 0 {
					health += fmt.Sprintf(" (HTTP %d)", c.HTTPStatus)
				}
				if c.Message != "" {
					health += ": " + c.Message
				}
				health += ", since " + when(c.FailingSince)
			}
			if c.Health == string(states.NeedsReconnect) {
				health += "; reconnect: flowctl connect " + c.Provider
				if c.Account != "" {
					health += " --account " + shellQuote(c.Account)
				}
			}
		}
		row("health", health)
		if c.ClientID != "" {
			row("client", c.ClientID+" ("+strings.ReplaceAll(c.Registration, "_", " ")+")")
		}
		row("scopes", dash(strings.Join(c.Scopes, " ")))
		if c.ExpiresAt == nil {
			row("token expires", "no expiry")
		} else {
			row("token expires", when(c.ExpiresAt))
		}
		row("refresh token", map[bool]string{true: "held", false: "none"}[c.HasRefreshToken])
		last := when(c.LastRefreshAt)
		if c.Refreshes > 0 {
			last += fmt.Sprintf(", %d refreshes, %d rotated", c.Refreshes, c.Rotations)
		}
		row("last refresh", last)
		row("connected", c.ConnectedAt.Local().Format(time.DateTime)+" by flow "+shortID(c.Flow))
		_ = tw.Flush()
	}
}

// statusWait returns the flow, long-polling up to wait for it to end.
func (a *app) statusWait(ctx context.Context, cl *client.Client, state string, wait time.Duration) (wire.Flow, error) {
	until := a.now().Add(wait)
	for {
		left := until.Sub(a.now())
		poll := min(left, a.pollWait)
		if poll < 0 {
			poll = 0
		}
		f, err := cl.Status(ctx, state, poll)
		if err != nil || f.Terminal || left <= poll {
			return f, err
		}
	}
}

func (a *app) waitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait <state>",
		Short: "Wait for a flow to end (re-attach from another terminal)",
		Long: `wait waits until the flow ends, as connect does, and reports how it ended:
use it to re-attach to a connect started elsewhere (another terminal, a script
that ran 'connect --no-browser --json'). Ctrl+C stops waiting and leaves the
flow running in flowd.

` + stateArgHelp + `

` + exitCodesHelp,
		Example: `  flowctl wait 3fa9c1d2
  state=$(flowctl connect github --no-browser --json | jq -r .state)
  flowctl wait "$state" --json`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl := a.client()
			defer cl.Close()
			f, err := withState(ctx, a, cl, args[0], func(state string) (wire.Flow, error) {
				return cl.Status(ctx, state, 0)
			})
			if err == nil && !f.Terminal && f.UserCode != "" {
				// A device flow: the user may need the code again.
				showDeviceCode(a.info(), f.Provider, f.UserCode, f.VerificationURI, f.VerificationURIComplete)
			}
			if err == nil && !f.Terminal {
				var cd *countdown
				if !a.json && a.isTerminal(a.stdout) {
					cd = startCountdown(a.stdout, "Waiting for flow "+shortID(f.State)+":", "stops waiting", f.ExpiresAt, a.now, a.tick)
				}
				f, err = a.waitFlow(ctx, cl, f.State, f.ExpiresAt, cd)
				cd.Stop()
			}
			if err != nil {
				if ctx.Err() != nil {
					return &exitError{ExitInterrupted, fmt.Errorf("stopped waiting; the flow goes on in flowd (re-attach: flowctl wait %s)", args[0])}
				}
				return err
			}
			return a.reportOutcome(f, "")
		},
	}
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel <state>",
		Short: "Cancel a flow that has not ended",
		Long: `cancel ends a live flow in flowd with error(canceled); a callback that
arrives later changes nothing.

` + stateArgHelp,
		Example: `  flowctl cancel 3fa9c1d2`,
		Args:    argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl := a.client()
			defer cl.Close()
			f, err := withState(ctx, a, cl, args[0], func(state string) (wire.Flow, error) {
				return cl.Cancel(ctx, state)
			})
			if err != nil {
				return fmt.Errorf("cancel flow %s: %w", args[0], err)
			}
			if a.json {
				return a.writeJSON(f)
			}
			fmt.Fprintf(a.stdout, "Canceled flow %s (%s).\n", f.State, f.Provider)
			return nil
		},
	}
}

func (a *app) listCmd() *cobra.Command {
	var statuses []string
	var provider string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List flows, newest first",
		Long: `list shows the flows flowd knows: live ones and finished ones it still
keeps. The STATE column is a prefix you can give to status, wait, cancel and
inspect.`,
		Example: `  flowctl list
  flowctl list --status awaiting_callback,pending
  flowctl list --provider github --json`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			sts := splitList(statuses)
			for _, s := range sts {
				if !states.State(s).Valid() {
					return usagef("unknown status %q: use one of %s", s, joinStates(states.AllStates))
				}
			}
			cl := a.client()
			defer cl.Close()
			flows, err := cl.List(cmd.Context(), sts, provider)
			if err != nil {
				return fmt.Errorf("list flows: %w", err)
			}
			if flows == nil {
				flows = []wire.Flow{}
			}
			if a.json {
				return a.writeJSON(wire.ListResponse{Flows: flows})
			}
			if len(flows) == 0 {
				fmt.Fprintln(a.stdout, "No flows.")
				return nil
			}
			tw := newTable(a.stdout, 2)
			fmt.Fprintln(tw, "STATE\tPROVIDER\tSTATUS\tREASON\tTRANSPORT\tCREATED\tDEADLINE / ENDED")
			now := a.now()
			for _, f := range flows {
				end := "in " + formatAgo(f.ExpiresAt.Sub(now))
				if f.EndedAt != nil {
					end = formatAgo(now.Sub(*f.EndedAt)) + " ago"
				} else if !f.ExpiresAt.After(now) {
					end = "passed " + formatAgo(now.Sub(f.ExpiresAt)) + " ago"
				}
				reason := dash(f.Reason)
				if f.Connection != "" && f.Connection != string(states.Healthy) {
					reason += " (" + f.Connection + ")" // what became of the token it stored
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s ago\t%s\n", shortID(f.State), f.Provider, f.Status, reason, dash(f.Transport), formatAgo(now.Sub(f.CreatedAt)), end)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "only flows in these statuses, comma-separated ("+joinStates(states.AllStates)+")")
	cmd.Flags().StringVar(&provider, "provider", "", "only flows for this provider")
	return cmd
}

func joinStates(ss []states.State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatAgo renders a span coarsely, for tables: "12s", "4m", "3h", "2d".
func formatAgo(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// printFlow prints a flow as aligned "key: value" lines.
func (a *app) printFlow(w io.Writer, f wire.Flow) {
	tw := newTable(w, 1)
	now := a.now()
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("state", f.State)
	row("provider", f.Provider)
	status := f.Status
	if f.Exchanging {
		status += " (exchanging the code)"
	}
	row("status", status)
	if f.Reason != "" {
		row("reason", f.Reason+": "+f.ReasonText)
	}
	row("provider error", f.ErrorCode)
	row("message", f.Message)
	if f.HTTPStatus != 0 {
		row("http status", fmt.Sprint(f.HTTPStatus))
	}
	row("transport", f.Transport)
	row("redirect uri", f.RedirectURI)
	if f.Issuer != "" {
		iss := f.Issuer + " (iss checked when sent)"
		if f.IssuerRequired {
			iss = f.Issuer + " (iss required)"
		}
		row("issuer", iss)
	}
	row("scopes", strings.Join(f.Scopes, ", "))
	row("granted scopes", strings.Join(f.GrantedScopes, ", "))
	if f.TokenStored {
		row("token stored", "yes")
	}
	row("superseded by", f.SupersededBy)
	if !f.CreatedAt.IsZero() {
		row("created", fmt.Sprintf("%s (%s ago)", f.CreatedAt.Local().Format(time.DateTime), formatAgo(now.Sub(f.CreatedAt))))
	}
	if f.EndedAt != nil {
		row("ended", fmt.Sprintf("%s (%s ago)", f.EndedAt.Local().Format(time.DateTime), formatAgo(now.Sub(*f.EndedAt))))
	}
	deadline := f.ExpiresAt.Local().Format(time.DateTime)
	if !f.Terminal {
		if left := f.ExpiresAt.Sub(now); left > 0 {
			deadline += " (" + formatLeft(left) + " left)"
		} else {
			deadline += " (passed)"
		}
	}
	row("deadline", deadline)
	if f.IgnoredCallbacks > 0 {
		row("ignored callbacks", fmt.Sprint(f.IgnoredCallbacks))
	}
	row("connection", f.Connection)
	_ = tw.Flush()
}

// errNoMatch: no flow's state starts with the prefix.
var errNoMatch = errors.New("no flow matches")

// withState runs op on the flow arg names: a state, the callback URL
// carrying it, or a unique prefix of it, and returns what op returned.
// op runs on the argument as given first; only when flowd does not know
// that state is it taken for a prefix.
func withState[T any](ctx context.Context, a *app, cl *client.Client, arg string, op func(state string) (T, error)) (T, error) {
	state, err := stateFromArg(arg)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := op(state)
	if err == nil || !client.HasCode(err, wire.CodeUnknownState) {
		return v, err
	}
	full, perr := a.resolvePrefix(ctx, cl, state)
	if errors.Is(perr, errNoMatch) {
		return v, err // flowd's own message says what to do next
	}
	if perr != nil {
		return v, perr
	}
	return op(full)
}

// resolvePrefix finds the one flow whose state starts with prefix.
func (a *app) resolvePrefix(ctx context.Context, cl *client.Client, prefix string) (string, error) {
	flows, err := cl.List(ctx, nil, "")
	if err != nil {
		return "", fmt.Errorf("look up flows starting with %q: %w", prefix, err)
	}
	var ids []string
	var matches []wire.Flow
	for _, f := range flows {
		if strings.HasPrefix(f.State, prefix) {
			matches = append(matches, f)
			ids = append(ids, f.State)
		}
	}
	return pickPrefix(prefix, ids, func(w io.Writer) {
		for _, f := range matches {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", f.State, f.Provider, f.Status, f.CreatedAt.Local().Format(time.DateTime))
		}
	})
}

// pickPrefix returns the one id of ids, errNoMatch for none, and an error
// listing the candidates (via list) when the prefix is ambiguous.
func pickPrefix(prefix string, ids []string, list func(io.Writer)) (string, error) {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("%w %q", errNoMatch, prefix)
	case 1:
		return ids[0], nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "prefix %q matches %d flows; give more of the state:\n", prefix, len(ids))
	tw := newTable(&b, 2)
	list(tw)
	_ = tw.Flush()
	return "", errors.New(strings.TrimRight(b.String(), "\n"))
}
