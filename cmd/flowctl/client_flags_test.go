package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// --client-id with --client-secret-env sends the user's own client, the
// secret read from the environment (never from argv), and prints nothing
// of it.
func TestConnectWithOwnClient(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	c.env["MY_APP_SECRET"] = "app-secret-from-env-77"
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--no-browser", "--json",
		"--client-id", "my-app", "--client-secret-env", "MY_APP_SECRET", "--token-auth", "client_secret_post"), c.stderr.String())
	starts, _, _ := f.snapshot()
	require.Len(t, starts, 1)
	assert.Equal(t, "my-app", starts[0].ClientID)
	assert.Equal(t, "app-secret-from-env-77", starts[0].ClientSecret)
	assert.Equal(t, "client_secret_post", starts[0].TokenAuth)
	assert.NotContains(t, c.stdout.String()+c.stderr.String(), "app-secret-from-env-77")
}

// Misused client flags are usage errors, and nothing is started.
func TestConnectOwnClientFlagErrors(t *testing.T) {
	f := newFakeFlowd(t)
	for name, args := range map[string][]string{
		"secret env without id": {"--client-secret-env", "MY_APP_SECRET"},
		"empty secret env":      {"--client-id", "my-app", "--client-secret-env", "UNSET_VAR"},
		"token auth without id": {"--token-auth", "none"},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCLI("")
			c.env["MY_APP_SECRET"] = "s"
			assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, append([]string{"connect", "github", "--no-browser"}, args...)...))
		})
	}
	starts, _, _ := f.snapshot()
	assert.Empty(t, starts)
}
