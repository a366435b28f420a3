package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/states"
)

// States flowd issued before it stopped doing so begin with '-' one time
// in 64 (and with "--" one in 4096). Every command that takes a state
// takes such a one as its argument, through the real command tree,
// without "--", wherever it stands among the flags (issue 11, part 4).
func TestStateBeginningWithDashIsAnArgument(t *testing.T) {
	const dash = "-Wq3fZ0kLx9_aB7cD2eF4gH6iJ8kL0mN2oP4qR6sT8u" // 43 characters, like flowd's
	const dashdash = "--q3fZ0kLx9_aB7cD2eF4gH6iJ8kL0mN2oP4qR6sT8v"
	require.Len(t, dash, 43)
	require.Len(t, dashdash, 43)
	f := newFakeFlowd(t)

	// The README's script recipe: the state connect prints, passed on as is.
	f.nextState = dash
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--no-browser", "--json"), c.stderr.String())
	state := oneJSON(t, c.stdout.String())["state"].(string)
	require.Equal(t, dash, state)
	f.addFlow(dashdash, "google", states.Loopback, 5*time.Minute)

	for _, st := range []string{dash, dashdash} {
		for _, args := range [][]string{
			{"status", st},
			{"status", st, "--json"},
			{"status", "--json", st},
			{"status", "--wait", "10ms", st},
			{"status", "--", st},
			{"inspect", st},
			{"inspect", "--json", st},
		} {
			c := newCLI("")
			code := c.run(testCtx(t), f.socket, args...)
			assert.Equal(t, ExitOK, code, "%v: %s", args, c.stderr.String())
			assert.Contains(t, c.stdout.String(), st, "%v", args)
			assert.NotContains(t, c.stderr.String(), "unknown", "%v", args)
		}
	}
	// A prefix as flowctl list shows it (12 characters), beginning with '-'.
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", shortID(dash), "--json"), c.stderr.String())
	assert.Equal(t, dash, oneJSON(t, c.stdout.String())["state"])

	// cancel and wait.
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "cancel", dashdash), c.stderr.String())
	assert.Equal(t, "canceled", f.flow(dashdash).Reason)
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.finish(dash, states.Exchanged, states.Data{})
	}()
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "wait", dash, "--json"), c.stderr.String())
	assert.Equal(t, "complete", oneJSON(t, c.stdout.String())["status"])
}

// What is not shaped like a state is still parsed as flags: a mistyped
// flag stays a usage error naming it, and a flag's value is left to it.
func TestDashStateLeavesFlagsAlone(t *testing.T) {
	f := newFakeFlowd(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--nope", "abc"}, "unknown flag: --nope"},
		{[]string{"status", "-x", "abc"}, "unknown shorthand flag: 'x'"},
		{[]string{"inspect", "--db=/nonexistent/x.db-y", "-Wq3fZ0kLx9_"}, "x.db-y"},
		{[]string{"status", "--wait", "-1s", "abc"}, "--wait must not be negative"},
	} {
		c := newCLI("")
		code := c.run(testCtx(t), f.socket, tc.args...)
		assert.NotEqual(t, ExitOK, code, "%v", tc.args)
		assert.Contains(t, c.stderr.String(), tc.want, "%v", tc.args)
	}
	// list takes no state: an argument beginning with '-' is its flags' business.
	c := newCLI("")
	assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "list", "-Wq3fZ0kLx9_aB7cD2"))
	assert.True(t, strings.Contains(c.stderr.String(), "unknown shorthand flag"), c.stderr.String())
}
