package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
)

func TestParseMCP(t *testing.T) {
	c, err := Parse("f.toml", []byte(`
[mcp]
client_metadata_url = "https://flowd.example.com/client.json"
[mcp.clients."https://auth.example.com/"]
client_id = "pre"
client_secret_env = "PRE_SECRET"
`), func(k string) string { return map[string]string{"PRE_SECRET": "s3cr3t"}[k] })
	require.NoError(t, err)
	assert.Equal(t, "https://flowd.example.com/client.json", c.MCP.ClientMetadataURL)
	assert.Equal(t, []engine.MCPClient{{Server: "https://auth.example.com", ClientID: "pre", ClientSecret: "s3cr3t"}}, c.MCP.Clients)

	for name, tc := range map[string]struct{ toml, field string }{
		"metadata URL over http":      {"[mcp]\nclient_metadata_url = \"http://flowd.example.com/c.json\"", "mcp.client_metadata_url"},
		"metadata URL without a path": {"[mcp]\nclient_metadata_url = \"https://flowd.example.com\"", "mcp.client_metadata_url"},
		"client without id":           {"[mcp.clients.\"https://a.example\"]\nclient_secret = \"x\"", `mcp.clients."https://a.example".client_id`},
		"key not a URL":               {"[mcp.clients.github]\nclient_id = \"x\"", `mcp.clients."github"`},
		"unknown method":              {"[mcp.clients.\"https://a.example\"]\nclient_id = \"x\"\nauth_method = \"private_key_jwt\"", `mcp.clients."https://a.example".auth_method`},
		"secret method, no secret":    {"[mcp.clients.\"https://a.example\"]\nclient_id = \"x\"\nauth_method = \"client_secret_post\"", `mcp.clients."https://a.example".auth_method`},
		"unknown setting":             {"[mcp]\nclient_nmae = \"x\"", "mcp.client_nmae"},
	} {
		_, err := Parse("f.toml", []byte(tc.toml), func(string) string { return "" })
		var ce *Error
		require.ErrorAs(t, err, &ce, name)
		assert.Equal(t, tc.field, ce.Field, name)
	}
}
