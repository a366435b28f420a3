package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// takesStateAnnotation marks the commands whose argument is a flow's state
// (status, wait, cancel, inspect).
const takesStateAnnotation = "flowctl/takes-state"

// takesState marks cmd as taking a state argument; see stateArgsLast.
func takesState(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[takesStateAnnotation] = "yes"
	return cmd
}

// minDashState is the shortest argument beginning with '-' that is taken
// for a state (or a prefix of one) rather than for flags: flowctl list
// shows 12-character prefixes, and no flag of these commands is as long
// in single-dash form.
const minDashState = 8

// stateArgsLast lets a state that begins with '-' be given like any other.
// States are base64url, so flowd used to issue one in 64 beginning
// with '-' (and one in 4096 with "--"), which cobra would parse as flags.
// For a command that takes a state, such an argument is moved behind a
// "--", where cobra takes it as positional. An argument is a state when it
// is at least minDashState characters of the base64url alphabet, is no
// flag of the command, is not the value of the flag before it, and (after
// a single '-') is not a run of the command's one-letter flags. Anything
// else is left for cobra, whose errors for a mistyped flag stay as they were.
func stateArgsLast(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd.Annotations[takesStateAnnotation] == "" {
		return args
	}
	end := slices.Index(args, "--")
	if end < 0 {
		end = len(args)
	}
	var kept, moved []string
	for i, a := range args[:end] {
		if isDashState(cmd, a) && (i == 0 || !takesValue(cmd, args[i-1])) {
			moved = append(moved, a)
			continue
		}
		kept = append(kept, a)
	}
	if len(moved) == 0 {
		return args
	}
	out := append(kept, "--")
	out = append(out, moved...)
	if end < len(args) {
		out = append(out, args[end+1:]...)
	}
	return out
}

// isDashState reports whether a is a state (or a prefix of one) beginning
// with '-' rather than flags of cmd.
func isDashState(cmd *cobra.Command, a string) bool {
	if !strings.HasPrefix(a, "-") || len(a) < minDashState {
		return false
	}
	for _, r := range a {
		if !isBase64URL(r) {
			return false // '=' (--flag=value), '.', '/', spaces: not a state
		}
	}
	if name, ok := strings.CutPrefix(a, "--"); ok && cmd.Flag(name) != nil {
		return false
	}
	if !strings.HasPrefix(a, "--") {
		allShort := true
		for _, r := range a[1:] {
			allShort = allShort && shorthand(cmd, string(r)) != nil
		}
		if allShort {
			return false
		}
	}
	return true
}

// takesValue reports whether a is a flag of cmd that consumes the next
// argument as its value (--since 2h, -o x), so that argument is no state.
func takesValue(cmd *cobra.Command, a string) bool {
	if strings.Contains(a, "=") || !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return false
	}
	if name, ok := strings.CutPrefix(a, "--"); ok {
		fl := cmd.Flag(name)
		return fl != nil && fl.NoOptDefVal == ""
	}
	if len(a) != 2 {
		return false
	}
	fl := shorthand(cmd, a[1:])
	return fl != nil && fl.NoOptDefVal == ""
}

func isBase64URL(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// shorthand finds the one-letter flag s of cmd or of a parent.
func shorthand(cmd *cobra.Command, s string) *pflag.Flag {
	if f := cmd.Flags().ShorthandLookup(s); f != nil {
		return f
	}
	return cmd.InheritedFlags().ShorthandLookup(s)
}
