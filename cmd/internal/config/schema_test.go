package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A value of the wrong type says what was expected, with an example to
// copy, instead of the TOML library's "destination has type slice".
func TestTypeErrorsSayWhatWasExpected(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[providers.github]\nclient_id = \"x\"\nscopes = \"read:user repo\"\n",
			`config f.toml: providers.github.scopes: expected a list, like ["read:user", "repo"]; found a string`},
		{"[providers.github]\nclient_id = \"x\"\nscopes = [\"repo\", 2]\n",
			`providers.github.scopes: expected a list of strings, like ["read:user", "repo"]; item 2 is an integer`},
		{"ttl = 300\n", `ttl: expected a duration in quotes, like "5m"; found an integer`},
		{"listen = 8085\n", `listen: expected a string, like "127.0.0.1:8085"; found an integer`},
		{"[providers.github]\nclient_id = 12345\n", `providers.github.client_id: expected a string, like "Iv1.0123456789abcdef"; found an integer`},
		{"[providers.github]\nclient_id = \"x\"\nauth_params = \"prompt=consent\"\n", `providers.github.auth_params: expected a table of strings, like { prompt = "consent" }; found a string`},
		{"providers = \"github\"\n", `providers: expected a table`},
		{"[providers]\ngithub = \"x\"\n", `providers.github: expected a table, like [providers.github]`},
	} {
		_, err := Parse("f.toml", []byte(tc.in), nil)
		require.Error(t, err, tc.in)
		assert.Contains(t, err.Error(), tc.want, tc.in)
		assert.NotContains(t, err.Error(), "destination has type", tc.in)
	}
	// A secret typed as a number stays out of the message.
	_, err := Parse("f.toml", []byte("[providers.github]\nclient_id = \"x\"\nclient_secret = 918273645\n"), nil)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "918273645")
}

// An unknown key is answered with the nearest known one, and the pointer to
// the reference works without a checkout.
func TestUnknownKeySuggestsTheNearest(t *testing.T) {
	for _, tc := range []struct{ in, field, near string }{
		{"[providers.github]\nclient_id = \"x\"\nclient_secert = \"s\"\n", "providers.github.client_secert", "client_secret"},
		{"[providers.github]\nclient_id = \"x\"\nscope = [\"repo\"]\n", "providers.github.scope", "scopes"},
		{"[providers.github]\nclientid = \"x\"\n", "providers.github.clientid", "client_id"},
		{"listen_addr = \"127.0.0.1:8085\"\n", "listen_addr", ""},
		{"retension = \"1h\"\n", "retension", "retention"},
		{"state-dir = \"/x\"\n", "state-dir", "state_dir"},
	} {
		_, err := Parse("f.toml", []byte(tc.in), nil)
		require.Error(t, err, tc.in)
		assert.Contains(t, err.Error(), tc.field+": unknown setting", tc.in)
		if tc.near != "" {
			assert.Contains(t, err.Error(), "did you mean "+tc.near+"?", tc.in)
		} else {
			assert.NotContains(t, err.Error(), "did you mean", tc.in)
		}
		assert.Contains(t, err.Error(), "flowd -help-config", tc.in)
	}
}

func TestEditDistance(t *testing.T) {
	assert.Equal(t, 0, editDistance("scopes", "scopes"))
	assert.Equal(t, 1, editDistance("scope", "scopes"))
	assert.Equal(t, 1, editDistance("secert", "secret"), "a transposition is one edit")
	assert.Equal(t, 3, editDistance("kitten", "sitting"))
}

// The settings checkShape knows are exactly the struct's: a key added to
// one and not the other would be refused, or slip through unchecked.
func TestShapeMatchesTheFileStruct(t *testing.T) {
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			out = append(out, strings.Split(rt.Field(i).Tag.Get("toml"), ",")[0])
		}
		return out
	}
	assert.ElementsMatch(t, tags(file{}), sortedKeys(topSettings))
	assert.ElementsMatch(t, tags(providerFile{}), sortedKeys(providerSettings))
	assert.ElementsMatch(t, tags(mcpFile{}), sortedKeys(mcpSettings))
	assert.ElementsMatch(t, tags(mcpClientFile{}), sortedKeys(mcpClientSettings))
}
