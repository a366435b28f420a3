package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// engineRig is flowd's engine embedded in the test, on a log that survives
// the engine being closed and opened again, against a real Dex.
type engineRig struct {
	t     *testing.T
	dex   *dextest.Server
	clock *fakeclock.Clock
	dir   string
	// logs is the engine's slog output, scanned for secrets at the end.
	logs bytes.Buffer

	log      engine.Log
	closeLog func() error
	eng      *engine.Engine
	// identify, when set before open, is the engine's Config.Identify.
	identify engine.IdentifyFunc
}

const (
	dexProvider    = "dex"
	publicProvider = "dex-public"
	// deviceProvider is the public client with Dex's device endpoint.
	deviceProvider = "dex-device"
)

func newEngineRig(t *testing.T, opts dextest.Options) *engineRig {
	t.Helper()
	r := &engineRig{
		t:     t,
		dex:   dextest.Start(t, opts),
		clock: fakeclock.New(time.Now()),
		dir:   t.TempDir(),
	}
	r.open()
	t.Cleanup(func() {
		r.close()
		r.scanForSecrets()
	})
	return r
}

func (r *engineRig) dbPath() string { return filepath.Join(r.dir, "flowd.db") }

// openLog opens the bbolt event log, as flowd does.
func (r *engineRig) openLog() {
	db, err := persist.Open(r.dbPath(), persist.Options{})
	require.NoError(r.t, err, "open the event log")
	r.log, r.closeLog = db, db.Close
}

func (r *engineRig) open() {
	r.t.Helper()
	r.openLog()
	eng, err := engine.Open(context.Background(), engine.Config{
		Log:   r.log,
		Clock: r.clock,
		Providers: []engine.Provider{
			{
				Name: dexProvider, AuthURL: r.dex.AuthURL, TokenURL: r.dex.TokenURL,
				AuthMethod: engine.AuthMethodClientSecretBasic,
				ClientID:   dextest.ClientID, ClientSecret: dextest.ClientSecret,
				Scopes: []string{"openid", "email", "offline_access"},
			},
			{
				Name: publicProvider, AuthURL: r.dex.AuthURL, TokenURL: r.dex.TokenURL,
				AuthMethod: engine.AuthMethodNone,
				ClientID:   dextest.PublicClientID,
				Scopes:     []string{"openid", "offline_access"},
			},
			{
				Name: deviceProvider, AuthURL: r.dex.AuthURL, TokenURL: r.dex.TokenURL, DeviceAuthURL: r.dex.DeviceAuthURL,
				AuthMethod: engine.AuthMethodNone,
				ClientID:   dextest.PublicClientID,
				Scopes:     []string{"openid", "email", "offline_access"},
			},
		},
		LoopbackRedirectURL: r.dex.RedirectURIs[0],
		Logger:              slog.New(slog.NewJSONHandler(&r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Identify:            r.identify,
	})
	require.NoError(r.t, err, "open engine")
	r.eng = eng
}

func (r *engineRig) close() {
	r.t.Helper()
	if r.eng == nil {
		return
	}
	require.NoError(r.t, r.eng.Close(), "close engine")
	require.NoError(r.t, r.closeLog(), "close log")
	r.eng = nil
}

// restart closes the engine and its database and opens both again, as a
// daemon restart would.
func (r *engineRig) restart() {
	r.t.Helper()
	r.close()
	r.open()
}

// browse does the user's part in the browser and returns the callback the
// browser would deliver to flowd.
func (r *engineRig) browse(b *dextest.Browser, authURL string) engine.CallbackParams {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	final, err := b.Authorize(ctx, authURL)
	require.NoError(r.t, err, "browser")
	return callbackParams(final)
}

func callbackParams(u *url.URL) engine.CallbackParams {
	q := u.Query()
	return engine.CallbackParams{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"), ErrorDescription: q.Get("error_description")}
}

// connect runs a whole flow: Start, the browser, the callback.
func (r *engineRig) connect(provider string) states.Flow {
	r.t.Helper()
	ctx := context.Background()
	st, err := r.eng.Start(ctx, engine.StartRequest{Provider: provider})
	require.NoError(r.t, err)
	cb := r.browse(r.dex.Browser(), st.AuthURL)
	require.Equal(r.t, st.ID, cb.State, "dex hands our state back")
	f, err := r.eng.Callback(ctx, cb)
	require.NoError(r.t, err)
	return f
}

// userinfo asserts Dex accepts the access token and returns its claims.
func (r *engineRig) userinfo(accessToken string) map[string]any {
	r.t.Helper()
	claims, err := r.dex.Userinfo(context.Background(), accessToken)
	require.NoError(r.t, err, "dex must accept the stored access token")
	return claims
}

// scanForSecrets asserts that no code, verifier, client secret or token
// seen in the run is in the database file, the engine's logs or the
// exported event log.
func (r *engineRig) scanForSecrets() {
	t := r.t
	if r.dex.Secrets.Len() < 2 {
		t.Log("secret scan: no secrets recorded beyond the client secret")
	}
	for _, path := range []string{r.dbPath(), r.dbPath() + ".key"} {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Empty(t, r.dex.Secrets.Leaks(data), "secrets in %s", path)
	}
	assert.Empty(t, r.dex.Secrets.Leaks(r.logs.Bytes()), "secrets in the engine's log output")

	// The export is every record as JSON lines, read back from the closed
	// database file.
	var export bytes.Buffer
	enc := json.NewEncoder(&export)
	db, err := persist.Open(r.dbPath(), persist.Options{ReadOnly: true})
	require.NoError(t, err, "reopen the event log to export it")
	require.NoError(t, db.Scan(context.Background(), 0, func(rec states.Record) error { return enc.Encode(rec) }))
	require.NoError(t, db.Close())
	assert.Empty(t, r.dex.Secrets.Leaks(export.Bytes()), "secrets in the exported event log")
	t.Logf("secret scan: %d secrets (%v) checked against %d bytes of log, %d bytes of export",
		r.dex.Secrets.Len(), r.dex.Secrets.Kinds(), r.logs.Len(), export.Len())
}

func TestEngineConnectsAndRefreshesAgainstDex(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	ctx := context.Background()

	f := r.connect(dexProvider)
	require.Equal(t, states.Complete, f.State, "flow %+v", f)
	assert.Equal(t, states.Exchanged, f.Reason)
	assert.True(t, f.TokenStored)

	tok, st, err := r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.NoError(t, err)
	require.NotEmpty(t, st.RefreshToken, "offline_access gives a refresh token")
	assert.Equal(t, f.ID, st.Flow, "the token names the flow that obtained it")
	r.userinfo(tok.AccessToken)

	// A token not near expiry is handed out as is, without a refresh.
	again, _, err := r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.NoError(t, err)
	assert.Equal(t, tok.AccessToken, again.AccessToken)

	// Past its expiry the token is refreshed; Dex rotates the refresh
	// token, and the new one must be what is stored.
	prev := st
	for i := range 2 {
		r.clock.Advance(25 * time.Hour)
		tok, st, err = r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
		require.NoError(t, err, "refresh %d", i+1)
		assert.NotEqual(t, prev.AccessToken, tok.AccessToken, "refresh %d gives a new access token", i+1)
		assert.NotEqual(t, prev.RefreshToken, st.RefreshToken, "refresh %d: dex rotates the refresh token", i+1)
		r.userinfo(tok.AccessToken)

		_, err = r.dex.Refresh(ctx, prev.RefreshToken)
		var te *dextest.TokenError
		require.ErrorAs(t, err, &te, "dex refuses the spent refresh token")
		prev = st
	}

	// The rotated refresh token survives a restart.
	r.restart()
	r.clock.Advance(25 * time.Hour)
	tok, _, err = r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.NoError(t, err, "refresh after restart")
	r.userinfo(tok.AccessToken)
}

func TestEnginePublicClientAgainstDex(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	f := r.connect(publicProvider)
	require.Equal(t, states.Complete, f.State, "flow %+v", f)
	tok, _, err := r.eng.Token(context.Background(), engine.TokenKey{Provider: publicProvider})
	require.NoError(t, err)
	r.userinfo(tok.AccessToken)
}

func TestEngineDeniedByDex(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	ctx := context.Background()
	st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider, Scopes: []string{"openid", dextest.DeniedScope}})
	require.NoError(t, err)

	cb := r.browse(r.dex.Browser(), st.AuthURL)
	require.NotEmpty(t, cb.Error, "dex refuses the scope with an error redirect")
	f, err := r.eng.Callback(ctx, cb)
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ProviderDenied, f.Reason)
	assert.Equal(t, cb.Error, f.ErrorCode)
	assert.Equal(t, cb.ErrorDescription, f.Message, "the provider's own words reach the user")

	_, _, err = r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.ErrorIs(t, err, engine.ErrNoToken, "a denied flow stores no token")
}

func TestEngineFlowSurvivesRestartBetweenStartAndCallback(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	ctx := context.Background()

	st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider})
	require.NoError(t, err)
	r.restart()
	f, err := r.eng.Status(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, states.AwaitingCallback, f.State, "the flow is still awaited after a restart")

	// The user logs in while flowd is down; the callback lands after the
	// next restart.
	r.close()
	cb := r.browse(r.dex.Browser(), st.AuthURL)
	r.open()
	f, err = r.eng.Callback(ctx, cb)
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State, "flow %+v", f)

	tok, _, err := r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.NoError(t, err)
	r.userinfo(tok.AccessToken)
}

func TestEngineFlowExpiresWhileDown(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	ctx := context.Background()

	st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider, TTL: time.Minute})
	require.NoError(t, err)
	cb := r.browse(r.dex.Browser(), st.AuthURL)
	require.NotEmpty(t, cb.Code)

	r.close()
	r.clock.Advance(2 * time.Minute)
	r.open()

	f, err := r.eng.Status(ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Expired, f.State)
	assert.Equal(t, states.ExpiredWhileDown, f.Reason)

	// The late callback is refused and its code never redeemed.
	_, err = r.eng.Callback(ctx, cb)
	require.ErrorIs(t, err, engine.ErrNotAwaiting)
	assert.Zero(t, r.dex.TokenRequests("authorization_code"), "the code was never sent to dex")
	_, _, err = r.eng.Token(ctx, engine.TokenKey{Provider: dexProvider})
	require.ErrorIs(t, err, engine.ErrNoToken)
}

func TestEngineReplayedCodeIsNotRedeemedTwice(t *testing.T) {
	r := newEngineRig(t, dextest.Options{})
	ctx := context.Background()
	st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider})
	require.NoError(t, err)
	cb := r.browse(r.dex.Browser(), st.AuthURL)
	f, err := r.eng.Callback(ctx, cb)
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	require.Equal(t, 1, r.dex.TokenRequests("authorization_code"))

	_, err = r.eng.Callback(ctx, cb)
	require.ErrorIs(t, err, engine.ErrNotAwaiting, "a repeated callback is refused")
	assert.Equal(t, 1, r.dex.TokenRequests("authorization_code"), "the code was not sent to dex again")
}
