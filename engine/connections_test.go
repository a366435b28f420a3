package engine_test

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// events lists the events of a flow's history.
func eventsOf(t *testing.T, h *harness, flow string) []states.Event {
	t.Helper()
	hist, err := h.e.History(h.ctx, flow)
	require.NoError(t, err)
	var out []states.Event
	for _, r := range hist {
		out = append(out, r.Event)
	}
	return out
}

// exportOf is the whole log as flowctl log export writes it.
func exportOf(t *testing.T, h *harness) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, h.e.Export(h.ctx, engine.ExportQuery{}, func(r states.Record) error {
		line, err := r.Encode()
		b.Write(line)
		b.WriteByte('\n')
		return err
	}))
	return b.Bytes()
}

// A refresh leaves its trace on the flow that connected: refresh_started,
// then token_refreshed saying the refresh token rotated, with the new
// expiry; Connections reports it. The export holds none of the secrets
// that crossed the wire, and replays.
func TestRefreshIsRecorded(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	h.clk.Advance(2 * time.Hour)
	_, st, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)

	evs := eventsOf(t, h, f.ID)
	require.Equal(t, []states.Event{states.Created, states.URLIssued, states.ExchangeStarted, states.ExchangeSucceeded,
		states.RefreshStarted, states.TokenRefreshed}, evs)
	hist, _ := h.e.History(h.ctx, f.ID)
	last := hist[len(hist)-1].Data
	assert.True(t, last.Rotated)
	assert.NotEmpty(t, last.RefreshFP)
	require.NotNil(t, last.TokenExpiry)
	assert.Equal(t, st.Expiry, *last.TokenExpiry)

	cs, err := h.e.Connections(h.ctx)
	require.NoError(t, err)
	require.Len(t, cs, 1)
	c := cs[0]
	assert.Equal(t, "gh", c.Provider)
	assert.Equal(t, f.ID, c.Flow)
	assert.Equal(t, states.Healthy, c.Health)
	assert.True(t, c.HasRefreshToken)
	assert.Equal(t, 1, c.Refreshes)
	assert.Equal(t, 1, c.Rotations)
	assert.Equal(t, st.Expiry, c.Expiry)
	assert.Equal(t, h.clk.Now().UTC(), c.LastRefresh)

	exp := exportOf(t, h)
	for _, secret := range h.prov.Secrets() {
		assert.NotContains(t, string(exp), secret, "the export leaks a secret")
	}
	flows, err := states.Replay(decodeAll(t, exp), nil)
	require.NoError(t, err, "replay accepts the token events")
	assert.Equal(t, 1, flows[f.ID].Conn.Rotations)
}

// A provider that rejects the refresh token is recorded (refresh_failed,
// its error code and status, not transient) and the connection needs a
// reconnect; a provider that cannot be reached is transient and the
// connection is refresh_failing since the first failure.
func TestRefreshFailuresAreRecorded(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	h.clk.Advance(2 * time.Hour)

	h.prov.SetOverride(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	var re *engine.RefreshError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Transient)
	failedAt := h.clk.Now().UTC()
	cs, err := h.e.Connections(h.ctx)
	require.NoError(t, err)
	require.Len(t, cs, 1)
	assert.Equal(t, states.RefreshFailing, cs[0].Health)
	assert.Equal(t, failedAt, cs[0].FailingSince)
	assert.Equal(t, 503, cs[0].LastFailure.HTTPStatus)

	h.clk.Advance(time.Minute)
	h.prov.Refuse("invalid_grant", "The refresh token was revoked.")
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorAs(t, err, &re)
	assert.False(t, re.Transient)
	hist, _ := h.e.History(h.ctx, f.ID)
	last := hist[len(hist)-1]
	assert.Equal(t, states.RefreshFailed, last.Event)
	assert.Equal(t, "invalid_grant", last.Data.ErrorCode)
	assert.Equal(t, 400, last.Data.HTTPStatus)
	assert.False(t, last.Data.Tokens().Transient)
	cs, _ = h.e.Connections(h.ctx)
	assert.Equal(t, states.NeedsReconnect, cs[0].Health)
	assert.Equal(t, failedAt, cs[0].FailingSince, "failing since the first failure of the run")

	// A new connect replaces the connection: healthy again.
	h.prov.SetOverride(nil)
	g := h.connect("")
	cs, _ = h.e.Connections(h.ctx)
	require.Len(t, cs, 1)
	assert.Equal(t, g.ID, cs[0].Flow)
	assert.Equal(t, states.Healthy, cs[0].Health)
}

// Two engines sharing one log (replicas) and 64 concurrent Token calls on
// an expired token: one request reaches the token endpoint, and every
// caller gets the winner's token.
func TestRefreshSingleFlightAcrossEngines(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) { c.Log = sharedLog{Log: memlog.New()} })
	h.connect("")
	other, err := engine.Open(h.ctx, h.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	h.clk.Advance(2 * time.Hour)
	engines := []*engine.Engine{h.e, other}
	got := make([]string, 64)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			tok, _, err := engines[i%2].Token(h.ctx, engine.TokenKey{Provider: "gh"})
			if assert.NoError(t, err) {
				got[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	assert.Len(t, refreshTokensSent(h.prov), 1, "one refresh for 64 callers on two engines")
	for _, a := range got {
		assert.Equal(t, h.prov.Issued()[2], a)
	}
}

// A forced refresh (the API answered 401) renews a token that has not
// expired, once for concurrent callers.
func TestForceRefresh(t *testing.T) {
	h := newHarness(t)
	h.connect("")
	// The calls must overlap: a call that begins after the first refresh
	// ended was refused the new token, and refreshing again is right for it.
	// Hold the refresh at the token endpoint while the others queue.
	release := h.prov.Hold()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			tok, _, err := h.e.ForceRefresh(h.ctx, engine.TokenKey{Provider: "gh"})
			if assert.NoError(t, err) {
				assert.Equal(t, h.prov.Issued()[2], tok.AccessToken)
			}
		})
	}
	h.prov.WaitEntered(t)
	time.Sleep(100 * time.Millisecond) // let the other seven read the refused token and queue
	release()
	wg.Wait()
	assert.Len(t, refreshTokensSent(h.prov), 1)
}

// TokenSource refreshes through the engine: recorded and saved.
func TestTokenSource(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	ts := h.e.TokenSource(engine.TokenKey{Provider: "gh"})
	tok, err := ts.Token()
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[0], tok.AccessToken)
	h.clk.Advance(2 * time.Hour)
	tok, err = ts.Token()
	require.NoError(t, err)
	assert.Equal(t, h.prov.Issued()[2], tok.AccessToken)
	assert.Contains(t, eventsOf(t, h, f.ID), states.TokenRefreshed)
}

// The connection hook sees connect, refresh, failure and disconnect, and
// may call the engine (no lock is held).
func TestConnectionHook(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var h *harness
	h = newHarness(t, func(c *engine.Config) {
		c.Hooks.Connection = func(c engine.Connection) {
			// Would deadlock under the flow's or the token's lock.
			_, _ = h.e.Connections(h.ctx)
			_, _ = h.e.Status(h.ctx, c.Flow)
			mu.Lock()
			defer mu.Unlock()
			what := string(c.Health)
			if !c.Disconnected.IsZero() {
				what = "disconnected"
			}
			seen = append(seen, what)
		}
	})
	h.connect("")
	h.clk.Advance(2 * time.Hour)
	_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	h.clk.Advance(2 * time.Hour)
	h.prov.Refuse("invalid_grant", "gone")
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.Error(t, err)
	_, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"healthy", "healthy", string(states.NeedsReconnect), "disconnected"}, seen)
}

// Disconnect revokes at the provider (refresh token, then access token),
// records revoked and disconnected, and deletes the token; a refusing
// revocation endpoint is recorded as failed and the token is deleted all
// the same.
func TestDisconnectRevokes(t *testing.T) {
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{})
		p := providerConfig(prov, "gh")
		p.RevocationURL = prov.URL + oauthtest.RevokePath
		c.Providers = []engine.Provider{p}
	})
	h.prov = prov
	f := h.connect("")
	res, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationDone, res.Revocation)
	assert.Equal(t, []string{prov.Issued()[1], prov.Issued()[0]}, prov.Revoked())
	evs := eventsOf(t, h, f.ID)
	assert.Equal(t, []states.Event{states.Revoked, states.Disconnected}, evs[len(evs)-2:])
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken)
	cs, _ := h.e.Connections(h.ctx)
	assert.Empty(t, cs)

	g := h.connect("")
	prov.RefuseRevocation("unsupported_token_type", 0)
	res, err = h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationFailed, res.Revocation)
	assert.Equal(t, "unsupported_token_type", res.ErrorCode)
	hist, _ := h.e.History(h.ctx, g.ID)
	last := hist[len(hist)-1]
	assert.Equal(t, states.Disconnected, last.Event)
	assert.Equal(t, states.RevocationFailed, last.Data.Revocation)
	assert.Equal(t, 400, last.Data.HTTPStatus)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken, "the local copy is removed either way")
	for _, secret := range prov.Secrets() {
		assert.NotContains(t, string(exportOf(t, h)), secret)
	}
}

func decodeAll(t *testing.T, b []byte) []states.Record {
	t.Helper()
	var out []states.Record
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		r, err := states.Decode(line)
		require.NoError(t, err)
		out = append(out, r)
	}
	return out
}

// A process that stopped between refresh_started and its outcome leaves a
// claim in the log. The next process, sole writer of its log, takes it
// over at once rather than waiting for it to time out (the claim holds
// for twice the exchange timeout, and the fake clock does not move).
func TestRefreshClaimOfAStoppedProcessIsTakenOver(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	h.clk.Advance(2 * time.Hour)
	// What a process killed mid-refresh leaves: refresh_started, no outcome.
	hist, err := h.log.History(h.ctx, f.ID)
	require.NoError(t, err)
	last := hist[len(hist)-1]
	require.NoError(t, h.log.Append(h.ctx, []states.Record{{Version: states.SchemaVersion, Flow: f.ID, FlowSeq: last.FlowSeq + 1,
		Event: states.RefreshStarted, From: states.Complete, To: states.Complete, Time: h.clk.Now().UTC()}}, nil))
	h.restart()

	done := make(chan error, 1)
	go func() {
		_, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the new process waits for the claim of a stopped one")
	}
	evs := eventsOf(t, h, f.ID)
	assert.Equal(t, []states.Event{states.RefreshStarted, states.RefreshStarted, states.TokenRefreshed}, evs[len(evs)-3:],
		"the claim was taken over with a refresh_started of its own")
}

// Retention prunes finished flows, but not the flow of a connection that
// still holds its token: its refreshes go on being recorded and status
// goes on listing it. A disconnected connection's flow is pruned as any.
func TestRetentionKeepsActiveConnections(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) { c.Retention = 24 * time.Hour })
	kept := h.connect("")
	gone := h.connect("bob")
	_, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh", Account: "bob"})
	require.NoError(t, err)
	canceled := h.start("carol")
	_, err = h.e.Cancel(h.ctx, canceled.ID)
	require.NoError(t, err)

	h.clk.Advance(48 * time.Hour)
	h.restart() // Open starts a prune in the background
	for _, id := range []string{gone.ID, canceled.ID} {
		require.Eventually(t, func() bool {
			hist, err := h.e.History(h.ctx, id)
			return err != nil || len(hist) == 0
		}, 10*time.Second, time.Millisecond, "flow %s is past retention", id)
	}
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	evs := eventsOf(t, h, kept.ID)
	assert.Equal(t, states.TokenRefreshed, evs[len(evs)-1], "the refresh of a connection older than retention is recorded")
	cs, err := h.e.Connections(h.ctx)
	require.NoError(t, err)
	require.Len(t, cs, 1)
	assert.Equal(t, kept.ID, cs[0].Flow)
}

// A refresh that outlives its claim on a shared log: another engine takes
// the claim over and both reach the provider. Whatever order their
// outcomes land in, the history stays legal (no outcome without its
// refresh_started) and no call fails for want of a place to record.
func TestRefreshOutlivingItsClaimKeepsTheHistoryLegal(t *testing.T) {
	h := newHarness(t, func(c *engine.Config) { c.Log = sharedLog{Log: memlog.New()} })
	f := h.connect("")
	other, err := engine.Open(h.ctx, h.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	h.clk.Advance(2 * time.Hour)
	release := h.prov.Hold()
	errs := make(chan error, 2)
	go func() { _, _, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"}); errs <- err }()
	h.prov.WaitEntered(t)
	h.clk.Advance(11 * time.Second) // past the claim: twice the 5 s exchange timeout
	go func() { _, _, err := other.Token(h.ctx, engine.TokenKey{Provider: "gh"}); errs <- err }()
	h.prov.WaitEntered(t)
	release()
	for range 2 {
		if err := <-errs; err != nil {
			assert.NotContains(t, err.Error(), "illegal transition")
			var re *engine.RefreshError
			assert.ErrorAs(t, err, &re, "a refresh either returns a token or the provider's refusal")
		}
	}
	hist, err := h.log.History(h.ctx, f.ID)
	require.NoError(t, err)
	g, err := states.Fold(hist)
	require.NoError(t, err, "the history replays")
	assert.False(t, g.Conn.Refreshing, "both refreshes recorded an outcome or yielded to the other's")
}
