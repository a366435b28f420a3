package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// "No providers" says which file flowd read, and how to apply an edit
// without a restart.
func TestProvidersNoneNamesTheConfigFile(t *testing.T) {
	socket, d := realFlowd(t, "# nothing yet\n")
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "providers"))
	out := c.stdout.String()
	assert.Contains(t, out, "No providers are configured in "+d.Config.File+", the config file flowd read")
	assert.Contains(t, out, "flowctl reload")
	assert.NotContains(t, out, "restart flowd")
}

func TestReloadCommand(t *testing.T) {
	socket, d := realFlowd(t, staticProvider)
	file := d.Config.File
	second := strings.ReplaceAll(staticProvider, "providers.fake", "providers.other")
	require.NoError(t, os.WriteFile(file, []byte(staticProvider+second), 0o600))

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "reload"), c.stderr.String())
	assert.Equal(t, "Reloaded "+file+".\nProviders: fake, other.\nAdded: other.\n", c.stdout.String())
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "providers"))
	assert.Contains(t, c.stdout.String(), "other")

	// Invalid: exit 1 with file, field and reason; flowd keeps both.
	require.NoError(t, os.WriteFile(file, []byte(staticProvider+"[providers.broken]\nclient_id = 7\n"), 0o600))
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), socket, "reload"))
	assert.Contains(t, c.stderr.String(), file+": providers.broken.client_id: expected a string")
	assert.Contains(t, c.stderr.String(), "flowd goes on with the config it had")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), socket, "providers"))
	assert.Contains(t, c.stdout.String(), "other", "the running config stays")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), socket, "reload", "--json"))
	assert.Equal(t, "invalid_config", oneJSON(t, c.stdout.String())["error"].(map[string]any)["code"])
}
