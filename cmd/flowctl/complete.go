package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/states"
)

// completeTimeout bounds a completion's question to flowd: a shell waits
// on every Tab, and a flowd that does not answer offers nothing.
const completeTimeout = 2 * time.Second

// registerCompletions makes `flowctl completion bash|zsh|fish|powershell`
// complete what a user would type: provider names and flow states from
// the running flowd, and the fixed values of --status, --transport and
// --format. Every shell's script calls the hidden __complete command, so
// one set of functions serves them all.
func (a *app) registerCompletions(root *cobra.Command) {
	live := []string{string(states.Pending), string(states.AwaitingCallback)}
	for _, c := range root.Commands() {
		switch c.Name() {
		case "connect", "token", "disconnect":
			c.ValidArgsFunction = a.completeFirstArg(a.providerNames)
		case "wait", "cancel":
			// Only a live flow can be waited for or canceled.
			c.ValidArgsFunction = a.completeFirstArg(a.flowStates(live))
		case "status", "inspect":
			c.ValidArgsFunction = a.completeFirstArg(a.flowStates(nil))
		case "list":
			_ = c.RegisterFlagCompletionFunc("provider", a.completeFlag(a.providerNames))
			_ = c.RegisterFlagCompletionFunc("status", completeList(stateValues()))
		case "graph":
			_ = c.RegisterFlagCompletionFunc("format", fixed("mermaid\tMermaid flowchart", "dot\tGraphviz DOT"))
		case "log":
			for _, sub := range c.Commands() {
				if sub.Name() == "export" {
					_ = sub.RegisterFlagCompletionFunc("flow", a.completeFlag(a.flowStates(nil)))
				}
			}
		case "replay":
			c.ValidArgsFunction = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return []string{"jsonl"}, cobra.ShellCompDirectiveFilterFileExt
			}
		}
		if c.Name() == "connect" {
			_ = c.RegisterFlagCompletionFunc("transport", fixed(
				string(states.Loopback)+"\tthe browser on this machine reaches flowd's loopback listener",
				string(states.Gateway)+"\ta public gateway relays the callback (public_base_url)",
				string(states.Manual)+"\tpaste the address the browser ended on (over SSH)"))
		}
		if c.Name() == "inspect" {
			_ = c.MarkFlagFilename("db", "db")
		}
	}
	for _, c := range root.Commands() {
		if c.ValidArgsFunction == nil && c.Args != nil && c.Name() != "completion" && c.Name() != "help" {
			// No positional arguments to offer: no file names either.
			c.ValidArgsFunction = cobra.NoFileCompletions
		}
	}
}

// stateValues is every flow status --status takes, with what it means.
func stateValues() []string {
	var out []string
	for _, s := range states.AllStates {
		out = append(out, string(s))
	}
	return out
}

// completer returns candidates ("value\tdescription") from flowd.
type completer func(ctx context.Context) []string

func (a *app) completeFirstArg(fn completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return fn(cmd.Context()), cobra.ShellCompDirectiveNoFileComp
	}
}

func (a *app) completeFlag(fn completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return fn(cmd.Context()), cobra.ShellCompDirectiveNoFileComp
	}
}

func fixed(vals ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeList completes a comma-separated list flag: the values not yet
// given, after what is already typed ("pending,aw" -> "pending,awaiting_callback").
func completeList(vals []string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		done, prefix := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			done, prefix = toComplete[:i+1], toComplete[i+1:]
		}
		given := map[string]bool{}
		for _, v := range strings.Split(done, ",") {
			given[v] = true
		}
		var out []string
		for _, v := range vals {
			if !given[v] && strings.HasPrefix(v, prefix) {
				out = append(out, done+v)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// askCtx bounds a completion's request; cobra may give no context.
func askCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, completeTimeout)
}

// providerNames asks flowd for its providers; nothing when it is down.
func (a *app) providerNames(ctx context.Context) []string {
	ctx, cancel := askCtx(ctx)
	defer cancel()
	cl := a.client()
	defer cl.Close()
	ps, err := cl.Providers(ctx)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		desc := p.Preset
		if desc == "" {
			desc = p.AuthURL
		}
		out = append(out, p.Name+"\t"+desc)
	}
	return out
}

// flowStates asks flowd for the flows in statuses (all when nil), newest
// first, each with its provider and status as the description.
func (a *app) flowStates(statuses []string) completer {
	return func(ctx context.Context) []string {
		ctx, cancel := askCtx(ctx)
		defer cancel()
		cl := a.client()
		defer cl.Close()
		flows, err := cl.List(ctx, statuses, "")
		if err != nil {
			return nil
		}
		out := make([]string, 0, len(flows))
		for _, f := range flows {
			out = append(out, fmt.Sprintf("%s\t%s %s", f.State, f.Provider, f.Status))
		}
		return out
	}
}
