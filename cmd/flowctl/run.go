package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flowdhq/flowd/cmd/internal/client"
	"github.com/flowdhq/flowd/cmd/internal/version"
	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// Exit codes. They are part of flowctl's interface: scripts branch on them,
// and the root command's help lists them.
const (
	// ExitOK: the command did what was asked (connect: the flow completed).
	ExitOK = 0
	// ExitFailed: the flow ended in error, expired or was canceled, or flowd
	// refused the request.
	ExitFailed = 1
	// ExitUsage: the command line is wrong (unknown command or flag, missing
	// argument, bad value).
	ExitUsage = 2
	// ExitUnreachable: flowd could not be reached on its socket.
	ExitUnreachable = 3
	// ExitInterrupted: interrupted by Ctrl+C (connect cancels its flow first).
	ExitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success (connect, wait: the flow completed)
  1    the flow ended in error, expired or was canceled, or flowd refused the request
  2    usage error
  3    flowd unreachable (is it running? start it with: flowd)
  130  interrupted (Ctrl+C); connect cancels its flow in flowd first`

// deps is everything flowctl takes from the world, so tests can run the
// real command tree with fakes: no browser opens, no terminal is needed,
// and time-based waits are short.
type deps struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// getenv reads the environment (display detection, FLOWD_SOCKET).
	getenv func(string) string
	// goos is runtime.GOOS; display detection differs on Linux.
	goos    string
	browser Browser
	// isTerminal reports whether w is an interactive terminal.
	isTerminal func(w io.Writer) bool
	now        func() time.Time
	// pollWait is the longest single long poll; the loop polls again after it.
	pollWait time.Duration
	// tick is how often the live countdown line is redrawn.
	tick time.Duration
	// retryEvery is how long connect and wait pause before asking a flowd
	// that went away again.
	retryEvery time.Duration
	// cancelTimeout bounds the cancel request sent after Ctrl+C.
	cancelTimeout time.Duration
	// deadlineGrace is how long after a flow's deadline flowctl keeps
	// waiting for flowd to record the expiry.
	deadlineGrace time.Duration
	// environ is the environment exec passes on, with the tokens added.
	environ func() []string
	// execve replaces flowctl with exec's command (syscall.Exec); nil runs
	// the command as a child instead (tests, systems without exec(2)).
	execve func(path string, argv, env []string) error
}

func defaultDeps(stdin io.Reader, stdout, stderr io.Writer) *deps {
	return &deps{
		stdin:         stdin,
		stdout:        stdout,
		stderr:        stderr,
		getenv:        os.Getenv,
		goos:          runtime.GOOS,
		browser:       systemBrowser{},
		isTerminal:    isTerminal,
		now:           time.Now,
		pollWait:      time.Minute,
		tick:          time.Second,
		retryEvery:    time.Second,
		cancelTimeout: 5 * time.Second,
		deadlineGrace: 15 * time.Second,
		environ:       os.Environ,
		execve:        execve,
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// run is flowctl: it parses args, runs the command and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runWith(ctx, args, defaultDeps(stdin, stdout, stderr))
}

// app holds the global flags and the dependencies of one invocation.
type app struct {
	*deps
	socketFlag string
	json       bool
}

func runWith(ctx context.Context, args []string, d *deps) int {
	a := &app{deps: d}
	root := a.rootCmd()
	root.SetArgs(stateArgsLast(root, args))
	_, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code, err := classify(err)
	if errors.Is(err, errSilent) {
		return code
	}
	// --json may not have been parsed when the command line was wrong;
	// look for it in args so scripts still get their one object.
	jsonMode := a.json || slices.Contains(args, "--json")
	if jsonMode {
		a.printJSONError(code, err)
	}
	fmt.Fprintln(d.stderr, err.Error())
	if code == ExitUsage && !jsonMode {
		fmt.Fprintln(d.stderr, "Run 'flowctl --help' for usage.")
	}
	return code
}

// runError marks an error returned by a command's RunE, as opposed to one
// cobra raised while parsing the command line (always a usage error).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// usageError is a bad command line found by a command itself (a bad flag value).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// stateAsFlag explains an unknown flag that is a flow's state: one state
// in 64 starts with '-' (state tokens are base64url), and the flag parser
// takes it for a flag.
func stateAsFlag(err error) error {
	msg := err.Error()
	i := strings.LastIndex(msg, " in -")
	if !strings.HasPrefix(msg, "unknown shorthand flag") || i < 0 || len(msg)-i-len(" in ") < minStateLen {
		return err
	}
	return fmt.Errorf("%w; a state that starts with '-' goes after --, like: flowctl wait -- %s", err, msg[i+len(" in "):])
}

// minStateLen is the shortest argument stateAsFlag takes for a state: a
// state is 43 characters, a prefix of it (inspect) shorter.
const minStateLen = 8

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError carries a chosen exit code (flow outcomes, Ctrl+C).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errSilent is wrapped by errors whose story has already been told on
// stdout (a failed flow's result): run only sets the exit code.
var errSilent = errors.New("already reported")

func silentExit(code int) error { return &exitError{code: code, err: errSilent} }

func classify(err error) (int, error) {
	var run *runError
	if !errors.As(err, &run) {
		return ExitUsage, err
	}
	inner := run.err
	var ue *usageError
	var unreach *client.UnreachableError
	var ee *exitError
	switch {
	case errors.As(inner, &ee):
		return ee.code, ee.err
	case errors.As(inner, &ue):
		return ExitUsage, inner
	case errors.As(inner, &unreach):
		// Print exactly the sentence the user needs, without the
		// operation prefix it was wrapped in.
		return ExitUnreachable, unreach
	}
	return ExitFailed, inner
}

// printJSONError prints one {"error": {...}} object on stdout, so a script
// that parses --json output always gets exactly one object.
func (a *app) printJSONError(code int, err error) {
	body := wire.ErrorBody{Message: err.Error()}
	var ae *client.APIError
	switch {
	case errors.As(err, &ae) && ae.Code != "":
		body.Code = ae.Code
	case code == ExitUsage:
		body.Code = "usage"
	case code == ExitUnreachable:
		body.Code = "unreachable"
	case code == ExitInterrupted:
		body.Code = "interrupted"
	default:
		body.Code = "failed"
	}
	_ = a.writeJSON(wire.Error{Err: body})
}

// writeJSON prints v as one indented JSON object and a newline.
func (a *app) writeJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON output: %w", err)
	}
	return nil
}

// info is where human progress text goes: stdout normally, stderr with
// --json so stdout carries only the one JSON object.
func (a *app) info() io.Writer {
	if a.json {
		return a.stderr
	}
	return a.stdout
}

func (a *app) socket() string {
	if a.socketFlag != "" {
		return a.socketFlag
	}
	if s := a.getenv(wire.SocketEnv); s != "" {
		return s
	}
	// A flowd started with FLOWD_STATE_DIR keeps its socket there when
	// there is no XDG_RUNTIME_DIR: look where it does.
	if d := a.getenv(wire.StateDirEnv); d != "" {
		return wire.SocketPathIn(d)
	}
	return wire.DefaultSocketPath()
}

func (a *app) client() *client.Client { return client.New(a.socket()) }

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "flowctl",
		Short: "Connect accounts through flowd, and inspect its flows",
		Long: `flowctl asks flowd, the daemon that owns every OAuth connect flow, to start,
wait for, cancel and inspect flows. It never runs a flow itself: start flowd
first (run: flowd).

` + exitCodesHelp,
		Example: `  flowctl connect github
  flowctl connect google --scopes openid,email --transport manual
  flowctl list --status awaiting_callback
  flowctl inspect 'http://127.0.0.1:8085/oauth/callback?state=…&code=…'
  flowctl token github
  flowctl exec --env GITHUB_TOKEN=github -- gh repo list`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("flowctl {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&a.socketFlag, "socket", "", "flowd's unix socket (default $"+wire.SocketEnv+", else $XDG_RUNTIME_DIR/flowd.sock, else flowd.sock in $"+wire.StateDirEnv+", $XDG_STATE_HOME/flowd or ~/.local/state/flowd)")
	pf.BoolVar(&a.json, "json", false, "print exactly one JSON object on stdout (log export: JSON lines)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{stateAsFlag(err)} })

	root.AddCommand(
		a.connectCmd(),
		takesState(a.statusCmd()),
		takesState(a.waitCmd()),
		takesState(a.cancelCmd()),
		a.listCmd(),
		a.tokenCmd(),
		a.disconnectCmd(),
		a.providersCmd(),
		a.reloadCmd(),
		takesState(a.inspectCmd()),
		a.logCmd(),
		a.replayCmd(),
		a.graphCmd(),
		a.credentialCmd(),
		a.execCmd(),
	)
	// Streams before the completion command: it captures the output
	// writer when it is created.
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.InitDefaultCompletionCmd()
	a.registerCompletions(root)
	markRunErrors(root)
	return root
}

// markRunErrors wraps every command's RunE so run can tell an error the
// command returned from one cobra raised parsing the command line.
func markRunErrors(c *cobra.Command) {
	if c.RunE != nil {
		inner := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := inner(cmd, args); err != nil {
				return &runError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// argsUsage wraps a positional-argument check so its failure reads as
// usage and names the command.
func argsUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{fmt.Errorf("%s: %w (usage: %s)", cmd.CommandPath(), err, cmd.UseLine())}
		}
		return nil
	}
}

// splitList reads a comma-separated, possibly repeated flag value.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
