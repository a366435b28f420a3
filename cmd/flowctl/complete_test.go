package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/states"
)

// complete runs cobra's hidden __complete command, which every shell's
// completion script (bash, zsh, fish, powershell) calls on Tab, and
// returns the candidates without their descriptions, and the directive.
func complete(t *testing.T, socket string, args ...string) ([]string, string) {
	t.Helper()
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, append([]string{"__complete"}, args...)...), c.stderr.String())
	var vals []string
	directive := ""
	for _, l := range strings.Split(strings.TrimSpace(c.stdout.String()), "\n") {
		if strings.HasPrefix(l, ":") {
			directive = l
			continue
		}
		if l != "" {
			v, _, _ := strings.Cut(l, "\t")
			vals = append(vals, v)
		}
	}
	return vals, directive
}

func TestCompletionOffersWhatFlowdHas(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("live0123456789", "github", states.Loopback, 5*time.Minute)
	f.addFlow("done0123456789", "google", states.Loopback, 5*time.Minute)
	f.finish("done0123456789", states.Exchanged, states.Data{})

	got, dir := complete(t, f.socket, "connect", "")
	assert.Equal(t, []string{"github", "google"}, got, "provider names from flowd")
	assert.Equal(t, ":4", dir, "no file names after connect")
	got, _ = complete(t, f.socket, "token", "")
	assert.Equal(t, []string{"github", "google"}, got)
	got, _ = complete(t, f.socket, "list", "--provider", "")
	assert.Equal(t, []string{"github", "google"}, got)

	got, _ = complete(t, f.socket, "wait", "")
	assert.Equal(t, []string{"live0123456789"}, got, "only a live flow can be waited for")
	got, _ = complete(t, f.socket, "cancel", "")
	assert.Equal(t, []string{"live0123456789"}, got)
	got, _ = complete(t, f.socket, "inspect", "")
	assert.ElementsMatch(t, []string{"live0123456789", "done0123456789"}, got)
}

func TestCompletionOfFixedValues(t *testing.T) {
	// No flowd needed for these.
	got, _ := complete(t, "", "connect", "github", "--transport", "")
	assert.Equal(t, []string{"loopback", "gateway", "manual"}, got)
	got, _ = complete(t, "", "list", "--status", "")
	assert.Equal(t, []string{"pending", "awaiting_callback", "complete", "error", "expired"}, got)
	got, dir := complete(t, "", "list", "--status", "pending,e")
	assert.Equal(t, []string{"pending,error", "pending,expired"}, got, "a comma-separated list completes its last item")
	assert.Equal(t, ":6", dir, "no space after a list item, no files")
	got, _ = complete(t, "", "graph", "--format", "")
	assert.Equal(t, []string{"mermaid", "dot"}, got)
}

// flowd down: Tab offers nothing, quickly, and prints no error into the
// command line being edited.
func TestCompletionWithoutFlowd(t *testing.T) {
	begin := time.Now()
	got, dir := complete(t, t.TempDir()+"/none.sock", "connect", "")
	assert.Empty(t, got)
	assert.Equal(t, ":4", dir)
	assert.Less(t, time.Since(begin), completeTimeout+time.Second)
}

// The scripts for bash, zsh and fish all go through __complete, so what
// the tests above check is what each shell offers.
func TestCompletionScriptsUseComplete(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), "", "completion", sh), sh)
		assert.Contains(t, c.stdout.String(), "__complete", sh)
	}
}
