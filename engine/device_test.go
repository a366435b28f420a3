package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// newDeviceHarness is a harness whose fake provider keeps time by the
// engine's fake clock (skew ahead of it), and has a device endpoint.
func newDeviceHarness(t *testing.T, skew *atomic.Int64, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), clk: fakeclock.New(epoch), log: memlog.New(), logs: &syncbuf.Buffer{}}
	if skew == nil {
		skew = new(atomic.Int64)
	}
	h.prov = oauthtest.New(t, oauthtest.Options{Now: func() time.Time { return h.clk.Now().Add(time.Duration(skew.Load())) }})
	p := providerConfig(h.prov, "gh")
	p.DeviceAuthURL = h.prov.DeviceAuthURL
	h.cfg = engine.Config{Log: h.log, Clock: h.clk, Providers: []engine.Provider{p}, Logger: newTestLogger(h.logs), ExchangeTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.log = h.cfg.Log
	h.open()
	t.Cleanup(func() { _ = h.e.Close() })
	return h
}

func (h *harness) startDevice() engine.Started {
	h.t.Helper()
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: states.Device})
	require.NoError(h.t, err)
	require.NotNil(h.t, st.Device)
	return st
}

func (h *harness) polls(st engine.Started) oauthtest.DeviceState {
	h.t.Helper()
	d, ok := h.prov.Device(st.Device.UserCode)
	require.True(h.t, ok)
	return d
}

// The whole grant: Start hands out the user code, the engine polls every
// interval on its one timer (a pending poll records nothing), and the
// poll after the user approves completes the flow with the token stored.
// No device code or user code reaches the log.
func TestDeviceFlowCompletes(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	assert.Equal(t, h.prov.VerificationURI, st.Device.VerificationURI)
	assert.Contains(t, st.Device.VerificationURIComplete, st.Device.UserCode)
	assert.Equal(t, 5*time.Second, st.PollInterval)
	assert.Equal(t, 10*time.Minute, st.Deadline.Sub(epoch), "the flow lives as long as the device code")
	assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized}, h.events(st.ID))

	h.clk.Advance(4 * time.Second)
	assert.Equal(t, 0, h.polls(st).Polls, "no poll before the interval")
	h.clk.Advance(time.Second)
	assert.Equal(t, 1, h.polls(st).Polls)
	h.clk.Advance(10 * time.Second)
	assert.Equal(t, 3, h.polls(st).Polls)
	assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized}, h.events(st.ID), "authorization_pending records nothing")
	assert.Equal(t, int64(3), h.e.Stats().TimerWakeups, "one wake-up per poll, none between")

	dc, err := h.e.DeviceCode(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, epoch.Add(20*time.Second), dc.NextPoll, "polls at 5, 10 and 15 s: the next at 20 s")
	dc.NextPoll = time.Time{}
	assert.Equal(t, *st.Device, dc)

	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	f, err := h.e.Wait(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.True(t, f.TokenStored)
	assert.Equal(t, 0, h.polls(st).SlowDowns, "the strict provider never saw a poll too soon")
	tok, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(tok.AccessToken, "ACCESS-TOKEN-S3CR3T-"))
	assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized, states.ExchangeSucceeded}, h.events(st.ID))

	// Nothing more happens: no timer is armed for the finished flow.
	before := h.e.Stats().TimerWakeups
	h.clk.Advance(time.Hour - time.Second)
	assert.Equal(t, before, h.e.Stats().TimerWakeups)
	assert.Equal(t, 4, h.polls(st).Polls)

	checkReplay(t, h.log)
	assertNoSecrets(t, h, st)
	_, err = h.e.DeviceCode(h.ctx, st.ID)
	assert.ErrorIs(t, err, engine.ErrNotAwaiting)
}

// assertNoSecrets scans the log and the engine's output for every secret
// the provider saw, the device and user codes among them.
func assertNoSecrets(t *testing.T, h *harness, st engine.Started) {
	t.Helper()
	var all strings.Builder
	for _, r := range dump(t, h.log) {
		b, err := r.Encode()
		require.NoError(t, err)
		all.Write(b)
	}
	all.WriteString(h.logs.String())
	secrets := append(h.prov.Secrets(), st.Device.UserCode)
	for _, s := range secrets {
		assert.NotContains(t, all.String(), s)
	}
	assert.Contains(t, strings.Join(h.prov.Secrets(), " "), "DEVICE-CODE-S3CR3T-", "the scan knew the device code")
}

// slow_down adds 5 seconds to the interval for the rest of the flow (RFC
// 8628 section 3.5), recorded as poll_slowed; the strict provider, which
// answers slow_down to any poll sooner than its interval, never has to
// say it twice.
func TestDeviceSlowDown(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	h.prov.SlowDownNext()
	h.clk.Advance(5 * time.Second)
	hist, err := h.e.History(h.ctx, st.ID)
	require.NoError(t, err)
	require.Len(t, hist, 3)
	last := hist[2]
	assert.Equal(t, states.PollSlowed, last.Event)
	assert.Equal(t, 10, last.Data.PollInterval)
	assert.Equal(t, "slow_down", last.Data.ErrorCode)
	assert.Equal(t, epoch.Add(15*time.Second), *last.Data.NextPoll)

	h.clk.Advance(9 * time.Second)
	assert.Equal(t, 1, h.polls(st).Polls, "the next poll waits the longer interval")
	h.clk.Advance(time.Second)
	assert.Equal(t, 2, h.polls(st).Polls)
	h.clk.Advance(20 * time.Second)
	assert.Equal(t, 4, h.polls(st).Polls, "the longer interval holds for the rest of the flow")
	assert.Equal(t, 1, h.polls(st).SlowDowns)
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(10 * time.Second)
	assert.Equal(t, states.Complete, h.status(st.ID).State)
	assert.Equal(t, 1, h.polls(st).SlowDowns)
	checkReplay(t, h.log)
}

// The user refuses: access_denied ends the flow provider_denied with the
// provider's code, and polling stops.
func TestDeviceDenied(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	h.clk.Advance(5 * time.Second)
	require.True(t, h.prov.DenyDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	f := h.status(st.ID)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ProviderDenied, f.Reason)
	assert.Equal(t, "access_denied", f.ErrorCode)
	h.clk.Advance(time.Minute)
	assert.Equal(t, 2, h.polls(st).Polls)
	checkReplay(t, h.log)
}

// The device code runs out. At the flow's own deadline (the code's
// lifetime) the flow expires without another poll; and when the provider
// says expired_token first (its clock runs ahead), that ends it expired
// too, with the provider's code.
func TestDeviceExpiry(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		h := newDeviceHarness(t, nil)
		h.prov.SetDeviceCodeLifetime(62 * time.Second)
		st := h.startDevice()
		assert.Equal(t, 62*time.Second, st.Deadline.Sub(epoch))
		h.clk.Advance(62 * time.Second)
		f := h.status(st.ID)
		assert.Equal(t, states.Expired, f.State)
		assert.Equal(t, states.DeadlineExpired, f.Reason)
		assert.Equal(t, 12, h.polls(st).Polls, "polls at 5, 10, ... 60 s; none at the deadline")
	})
	t.Run("expired_token", func(t *testing.T) {
		var skew atomic.Int64
		h := newDeviceHarness(t, &skew)
		h.prov.SetDeviceCodeLifetime(60 * time.Second)
		st := h.startDevice()
		skew.Store(int64(20 * time.Second)) // the provider's clock jumps ahead
		h.clk.Advance(45 * time.Second)     // the provider's clock says 65 s
		f := h.status(st.ID)
		assert.Equal(t, states.Expired, f.State)
		assert.Equal(t, "expired_token", f.ErrorCode)
		checkReplay(t, h.log)
	})
	t.Run("ttl caps the code's lifetime", func(t *testing.T) {
		h := newDeviceHarness(t, nil)
		st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: states.Device, TTL: time.Minute})
		require.NoError(t, err)
		assert.Equal(t, time.Minute, st.Deadline.Sub(epoch))
	})
}

// A restart while the user has the code resumes polling on the recorded
// schedule: not at once on open, and not lost.
func TestDeviceRestartResumesSchedule(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	h.clk.Advance(12 * time.Second) // polls at 5 and 10 s
	require.Equal(t, 2, h.polls(st).Polls)
	h.restart()
	assert.Equal(t, 2, h.polls(st).Polls, "no poll at open")
	dc, err := h.e.DeviceCode(h.ctx, st.ID)
	require.NoError(t, err, "the user code is read back from the sealed store")
	assert.Equal(t, st.Device.UserCode, dc.UserCode)
	assert.Equal(t, epoch.Add(15*time.Second), dc.NextPoll, "the next point of the recorded schedule")
	h.clk.Advance(2 * time.Second)
	assert.Equal(t, 2, h.polls(st).Polls)
	h.clk.Advance(time.Second)
	assert.Equal(t, 3, h.polls(st).Polls, "the poll due at 15 s comes at 15 s")
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	assert.Equal(t, states.Complete, h.status(st.ID).State)
	assert.Equal(t, 0, h.polls(st).SlowDowns)
	checkReplay(t, h.log)
}

// lossyTransport forwards requests to the provider and then, while lose
// is set, loses the answer: flowd killed after the provider answered.
type lossyTransport struct {
	mu   sync.Mutex
	lose chan struct{}
}

func (l *lossyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// Whether this request's answer is lost is decided when it is sent.
	l.mu.Lock()
	lose := l.lose
	l.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(r)
	if lose == nil || err != nil {
		return resp, err
	}
	resp.Body.Close()
	<-lose // the process is gone: nothing is recorded
	return nil, errors.New("lost")
}

// A restart mid-poll. Polls are not recorded before they are made (a
// device code is presented many times), so the restarted engine polls
// again on schedule. When the lost answer was the token, the provider has
// spent the code and answers the next poll invalid_grant: the flow ends
// exchange_failed, never completes twice nor waits for ever, and the
// token is issued once.
func TestDeviceRestartMidPoll(t *testing.T) {
	lossy := &lossyTransport{}
	h := newDeviceHarness(t, nil, func(c *engine.Config) { c.HTTPClient = &http.Client{Transport: lossy} })
	st := h.startDevice()
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	lose := make(chan struct{})
	lossy.mu.Lock()
	lossy.lose = lose
	lossy.mu.Unlock()
	advanced := make(chan struct{})
	go func() { h.clk.Advance(5 * time.Second); close(advanced) }()
	require.Eventually(t, func() bool { return h.polls(st).Spent }, 10*time.Second, time.Millisecond, "the provider issued the token")
	assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized}, h.events(st.ID), "nothing recorded before the answer")

	// "Restart": a new engine on the same log; the old one is gone mid-poll.
	lossy.mu.Lock()
	lossy.lose = nil
	lossy.mu.Unlock()
	old := h.e
	h.open()
	assert.Equal(t, 1, h.polls(st).Polls)
	h.clk.Advance(4 * time.Second)
	assert.Equal(t, 1, h.polls(st).Polls, "not at once")
	h.clk.Advance(time.Second)
	f := h.status(st.ID)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ExchangeFailed, f.Reason)
	assert.Equal(t, "invalid_grant", f.ErrorCode)
	assert.Equal(t, 2, h.polls(st).Polls)
	assert.Len(t, h.prov.Issued(), 2, "one access and one refresh token: issued once")

	close(lose) // the old engine's poll returns; its flow has moved on
	<-advanced
	_ = old.Close()
	checkReplay(t, h.log)
}

// Network trouble is slow_down's cousin (RFC 8628 section 3.5: poll less
// often after a timeout): the interval grows and is recorded; the flow
// goes on.
func TestDevicePollNetworkError(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	h.prov.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		c.Close()
	})
	h.clk.Advance(5 * time.Second)
	f := h.status(st.ID)
	assert.Equal(t, states.AwaitingCallback, f.State)
	assert.Equal(t, 10*time.Second, f.PollInterval)
	assert.Equal(t, "network_error", f.ErrorCode)
	h.prov.SetOverride(nil)
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(10 * time.Second)
	assert.Equal(t, states.Complete, h.status(st.ID).State)
}

// Cancel and supersede end a device flow like any other, and its sealed
// codes go with it; a callback naming a device flow changes nothing.
func TestDeviceCancelAndCallback(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: "made-up"})
	assert.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Len(t, h.events(st.ID), 2)
	f, err := h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Canceled, f.Reason)
	_, found, err := h.log.Secret(h.ctx, "device/"+st.ID)
	require.NoError(t, err)
	assert.False(t, found, "the sealed codes are deleted with the flow")
	h.clk.Advance(time.Minute)
	assert.Equal(t, 0, h.polls(st).Polls)
}

// A provider without a device endpoint, or one that refuses the request,
// fails Start with a clear error and records nothing.
func TestDeviceStartRefused(t *testing.T) {
	h := newHarness(t)
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: states.Device})
	assert.ErrorIs(t, err, engine.ErrNoDeviceEndpoint)

	d := newDeviceHarness(t, nil, func(c *engine.Config) { c.Providers[0].ClientSecret = "wrong" })
	_, err = d.e.Start(d.ctx, engine.StartRequest{Provider: "gh", Transport: states.Device})
	var dae *engine.DeviceAuthorizationError
	require.ErrorAs(t, err, &dae)
	assert.Equal(t, "invalid_client", dae.ErrorCode)
	assert.Equal(t, http.StatusUnauthorized, dae.HTTPStatus)
	assert.NotContains(t, err.Error(), "wrong")
	assert.Empty(t, dump(t, d.log))
}

// The sealed form keeps the user code recoverable after a restart.
func TestDeviceSecretIsSealedJSON(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	plain, found, err := h.log.Secret(h.ctx, "device/"+st.ID)
	require.NoError(t, err)
	require.True(t, found)
	var s map[string]string
	require.NoError(t, json.Unmarshal(plain, &s))
	assert.Equal(t, st.Device.UserCode, s["user_code"])
	assert.True(t, strings.HasPrefix(s["device_code"], "DEVICE-CODE-S3CR3T-"))
}

// GitHub answers device polls with HTTP 200 and an error field, and in
// form encoding to a client that does not ask for JSON: both are read as
// the RFC's errors, not as a token or a failure.
func TestDevicePollGitHubStyleAnswers(t *testing.T) {
	h := newDeviceHarness(t, nil)
	st := h.startDevice()
	answers := []string{"error=authorization_pending&error_description=pending", `{"error":"authorization_pending"}`,
		"access_token=ACCESS-TOKEN-S3CR3T-gh&token_type=bearer&scope=repo%2Cread%3Auser"}
	var n atomic.Int32
	h.prov.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		a := answers[min(int(n.Add(1))-1, len(answers)-1)]
		if strings.HasPrefix(a, "{") {
			w.Header().Set("Content-Type", "application/json")
		} else {
			w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		}
		_, _ = w.Write([]byte(a))
	})
	h.clk.Advance(10 * time.Second)
	assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized}, h.events(st.ID), "200 with error=authorization_pending is pending")
	h.clk.Advance(5 * time.Second)
	f := h.status(st.ID)
	require.Equal(t, states.Complete, f.State, "flow %+v", f)
	assert.Equal(t, []string{"repo", "read:user"}, f.GrantedScopes)
}
