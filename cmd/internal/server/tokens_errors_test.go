package server

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"flowd.local/flowd/cmd/internal/wire"
	"flowd.local/flowd/persist/etcdlog"
)

// A flow started for an account stores its token under that account: the
// token route finds it with ?account=, and without one (it is the only
// account); disconnecting the token stored under no account name removes
// nothing of alice's.
func TestTokenPerAccount(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.start(wire.StartRequest{Provider: "fake", Account: "alice"})
	page := h.browser("GET", callbackPath(url.Values{"state": {st.State}, "code": {goodCode}}), nil)
	require.Equal(t, http.StatusOK, page.status, string(page.body))

	alice := h.local("GET", "/v1/providers/fake/token?account=alice", nil)
	require.Equal(t, http.StatusOK, alice.status, string(alice.body))
	assert.Contains(t, string(alice.body), h.provider.Issued()[0])

	only := h.local("GET", "/v1/providers/fake/token", nil)
	assert.Equal(t, http.StatusOK, only.status, "the only account is the one meant")
	assert.Contains(t, string(only.body), `"account":"alice"`)

	none := h.local("GET", "/v1/providers/fake/token?account=bob", nil)
	assert.Equal(t, http.StatusNotFound, none.status)
	assert.Equal(t, wire.CodeNotConnected, none.errCode())
	gone := h.local("DELETE", "/v1/providers/fake/token?account=bob", nil)
	require.Equal(t, http.StatusOK, gone.status)
	assert.Contains(t, string(gone.body), `"removed":false`)
	still := h.local("GET", "/v1/providers/fake/token?account=alice", nil)
	assert.Equal(t, http.StatusOK, still.status, "disconnecting bob must not remove alice's token")
}

// A store without quorum is the server's temporary problem: 503
// unavailable with the store's own message, never a 500 that reads like a bug.
func TestStoreUnavailableIs503(t *testing.T) {
	status, code, msg := classify(fmt.Errorf("append: %w: endpoints 127.0.0.1:2379", etcdlog.ErrUnavailable))
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, wire.CodeUnavailable, code)
	assert.Contains(t, msg, "127.0.0.1:2379")
}
