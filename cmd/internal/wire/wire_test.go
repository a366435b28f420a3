package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoutePathEscapesWildcards(t *testing.T) {
	r, ok := RouteByName(RouteStatus)
	require.True(t, ok)
	assert.Equal(t, "/v1/flows/a%2Fb", r.Path("a/b"))
	r, _ = RouteByName(RouteToken)
	assert.Equal(t, "/v1/providers/github/token", r.Path("github"))
}

func TestRouteNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	pairs := map[string]bool{}
	for _, r := range Routes {
		assert.False(t, seen[r.Name], "duplicate route name %s", r.Name)
		seen[r.Name] = true
		k := r.Method + " " + r.Pattern
		assert.False(t, pairs[k], "duplicate route %s", k)
		pairs[k] = true
	}
}

func TestErrorShape(t *testing.T) {
	b, err := json.Marshal(Error{ErrorBody{Code: CodeUnknownState, Message: "m"}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"error":{"code":"unknown_state","message":"m"}}`, string(b))
}
