package server

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine/fakeclock"
)

// POST /v1/flows with transport device answers the user code at once, and
// GET /v1/flows/{state} gives it again while the flow is live (so flowctl
// wait can show it); the poll schedule is in the flow.
func TestStartDeviceOverTheAPI(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	h := newHarness(t, harnessOpts{device: true, clock: clk})
	st := h.start(wire.StartRequest{Provider: "fake", Transport: "device"})
	assert.Equal(t, "device", st.Transport)
	assert.NotEmpty(t, st.UserCode)
	assert.Equal(t, h.provider.VerificationURI, st.VerificationURI)
	assert.Contains(t, st.VerificationURIComplete, st.UserCode)
	assert.Equal(t, 5, st.PollInterval)
	assert.Empty(t, st.AuthURL)
	f := h.status(st.State)
	assert.Equal(t, st.UserCode, f.UserCode)
	assert.Equal(t, h.provider.VerificationURI, f.VerificationURI)
	require.NotNil(t, f.NextPoll)
	assert.Equal(t, 5*time.Second, f.NextPoll.Sub(f.CreatedAt))

	require.True(t, h.provider.ApproveDevice(st.UserCode))
	clk.Advance(5 * time.Second)
	f = h.status(st.State)
	assert.Equal(t, "complete", f.Status)
	assert.Empty(t, f.UserCode, "no code for a finished flow")
	assert.Nil(t, f.NextPoll)
}

// A provider without a device endpoint: 400 device_not_supported, saying
// what to do, and no flow.
func TestStartDeviceNotSupported(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := h.local("POST", "/v1/flows", wire.StartRequest{Provider: "fake", Transport: "device"})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, wire.CodeDeviceNotSupported, r.errCode())
	assert.Contains(t, r.errMessage(), "--transport manual")
	var list wire.ListResponse
	require.NoError(t, json.Unmarshal(h.local("GET", "/v1/flows", nil).body, &list))
	assert.Empty(t, list.Flows)
}
