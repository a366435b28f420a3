package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
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
	status, code, msg := classify(fmt.Errorf("append: %w: endpoints 127.0.0.1:2379", engine.ErrLogUnavailable))
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, wire.CodeUnavailable, code)
	assert.Contains(t, msg, "127.0.0.1:2379")
}

// The server answers a store's failures by the engine's storage classes
// alone, whichever backend raised them: a full store is 507 storage_full,
// an unreachable or closed one 503 unavailable, and neither starts a flow.
func TestStoreFailureClassesReachTheClient(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(*memlog.Log)
		status int
		code   string
	}{
		{"full", func(l *memlog.Log) { l.Fail(fmt.Errorf("quota: %w", engine.ErrStorageFull)) }, http.StatusInsufficientStorage, wire.CodeStorageFull},
		{"unreachable", func(l *memlog.Log) { l.Fail(fmt.Errorf("no quorum: %w", engine.ErrLogUnavailable)) }, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{"closed", func(l *memlog.Log) { _ = l.Close() }, http.StatusServiceUnavailable, wire.CodeUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := memlog.New()
			h := newHarness(t, harnessOpts{log: log})
			tc.fail(log)
			r := h.local("POST", "/v1/flows", wire.StartRequest{Provider: "fake"})
			assert.Equal(t, tc.status, r.status, string(r.body))
			assert.Equal(t, tc.code, r.errCode())
			if tc.name == "closed" {
				return // nothing to read it back with
			}
			log.Fail(nil)
			n := 0
			require.NoError(t, log.Scan(context.Background(), 0, func(states.Record) error { n++; return nil }))
			assert.Zero(t, n, "a refused start records nothing")
		})
	}
}
