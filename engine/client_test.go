package engine_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/states"
)

// A user's own OAuth app, registered at the fake provider beside the
// configured client. The provider binds codes and tokens to the client
// they were issued to, so any request made as the configured client for
// this one's flow is refused and the tests below fail.
const (
	byoID     = "users-own-app-42"
	byoSecret = "BYO-CLIENT-SECRET-n3v3rl0gg3d"
)

// newBYOHarness is a harness whose provider knows the user's own client
// too and has a revocation endpoint.
func newBYOHarness(t *testing.T) *harness {
	t.Helper()
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{})
		p := providerConfig(prov, "gh")
		p.RevocationURL = prov.URL + oauthtest.RevokePath
		c.Providers = []engine.Provider{p}
	})
	h.prov = prov
	prov.AddClient(byoID, byoSecret)
	return h
}

func byoClient() *engine.Client {
	return &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: engine.AuthMethodClientSecretPost}
}

// assertAsBYO asserts the provider's last token request authenticated as
// the user's own client.
func assertAsBYO(t *testing.T, h *harness, what string) {
	t.Helper()
	r := h.prov.LastRequest()
	assert.Equal(t, byoID, r.Form.Get("client_id"), what)
	assert.Equal(t, byoSecret, r.Form.Get("client_secret"), what)
}

// The flow, its exchange, its refreshes and its revocation all go out as
// the client the Start brought; the record names that client (never its
// secret) and the provider's configured client is not used.
func TestPerStartClientConnects(t *testing.T) {
	h := newBYOHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	assert.Equal(t, byoID, queryOf(t, st.AuthURL).Get("client_id"), "the user authorizes the client they brought")
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State, "%s: %s", f.ErrorCode, f.Message)
	assertAsBYO(t, h, "the code is exchanged as the per-start client")

	hist, err := h.e.History(h.ctx, st.ID)
	require.NoError(t, err)
	d := hist[0].Data
	assert.Equal(t, engine.RegisteredPerStart, d.Registration)
	assert.Equal(t, byoID, d.ClientID)
	assert.Equal(t, string(engine.AuthMethodClientSecretPost), d.TokenAuth)

	// The connection's refresh, after a restart, still as that client.
	h.restart()
	h.clk.Advance(2 * time.Hour)
	tok, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, byoID, stored.ClientID)
	assert.Equal(t, "refresh_token", h.prov.LastRequest().GrantType)
	assertAsBYO(t, h, "the refresh goes out as the per-start client")
	assert.True(t, h.prov.Active(tok.AccessToken))
	conns, err := h.e.Connections(h.ctx)
	require.NoError(t, err)
	require.Len(t, conns, 1)
	assert.Equal(t, byoID, conns[0].ClientID, "an operator sees which app the connection refreshes with")
	assert.Equal(t, engine.RegisteredPerStart, conns[0].Registration)

	res, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationDone, res.Revocation, "%s: %s", res.ErrorCode, res.Message)
	assert.Len(t, h.prov.Revoked(), 2, "the provider revoked both tokens: it took the request as their client's")
	_, ok, err := h.log.Secret(h.ctx, "client/conn/gh/")
	require.NoError(t, err)
	assert.False(t, ok, "the connection's client goes with its token")
	_, ok, err = h.log.Secret(h.ctx, "client/flow/"+st.ID)
	require.NoError(t, err)
	assert.False(t, ok, "the flow's own copy went when it completed")
	checkReplay(t, h.log)
	assert.NotContains(t, string(exportOf(t, h)), byoSecret)
	assert.NotContains(t, h.logs.String(), byoSecret)
}

// A restart between Start and the callback: the callback reads the sealed
// client back and exchanges as it.
func TestPerStartClientSurvivesRestart(t *testing.T) {
	h := newBYOHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	h.restart()
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State, "%s: %s", f.ErrorCode, f.Message)
	assertAsBYO(t, h, "exchanged as the per-start client after a restart")
	assert.Equal(t, 1, h.prov.Calls())
}

// A flow whose sealed client is gone when its callback comes ends
// exchange_failed(client_missing) without its code reaching the provider:
// never exchanged as the configured client instead.
func TestPerStartClientMissingFailsTheFlow(t *testing.T) {
	h := newBYOHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	require.NoError(t, h.e.Close())
	require.NoError(t, h.log.Append(h.ctx, nil, map[string][]byte{"client/flow/" + st.ID: nil}))
	h.open()
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ExchangeFailed, f.Reason)
	assert.Equal(t, "client_missing", f.ErrorCode)
	assert.Contains(t, f.Message, "start a new connect")
	assert.Equal(t, 0, h.prov.Calls(), "the code was sent nowhere")
	_, ok, err := h.log.Secret(h.ctx, "verifier/"+st.ID)
	require.NoError(t, err)
	assert.False(t, ok, "the flow's secrets are dropped")
	checkReplay(t, h.log)
}

// A connection whose sealed client is gone refuses to refresh, records no
// refresh, and never refreshes as the configured client.
func TestPerStartConnectionWithoutItsClient(t *testing.T) {
	h := newBYOHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	_, code := h.prov.Authorize(t, st.AuthURL)
	_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.NoError(t, h.log.Append(h.ctx, nil, map[string][]byte{"client/conn/gh/": nil}))
	calls, before := h.prov.Calls(), len(dump(t, h.log))
	h.clk.Advance(2 * time.Hour)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrClientMissing)
	assert.Contains(t, err.Error(), byoID)
	assert.Contains(t, err.Error(), "connect again")
	assert.Equal(t, calls, h.prov.Calls())
	assert.Len(t, dump(t, h.log), before, "no refresh_started for a refresh that cannot be made")

	res, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationFailed, res.Revocation)
	assert.Equal(t, "client_missing", res.ErrorCode)
	assert.Empty(t, h.prov.Revoked(), "not revoked as another client")
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.ErrorIs(t, err, engine.ErrNoToken, "the local copy is removed all the same")
}

// Reconnecting with the configured client replaces the per-start
// connection whole: its client is deleted, and refreshes go out as the
// configured client again.
func TestDefaultReconnectReplacesPerStartClient(t *testing.T) {
	// Whether or not the engine's index of connections is built yet (it
	// spares a default reconnect the delete when it knows there is no
	// client to delete), the per-start client goes.
	for _, indexed := range []bool{false, true} {
		t.Run(fmt.Sprintf("indexed=%v", indexed), func(t *testing.T) {
			h := newBYOHarness(t)
			if indexed {
				_, err := h.e.Connections(h.ctx)
				require.NoError(t, err)
			}
			st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
			require.NoError(t, err)
			_, code := h.prov.Authorize(t, st.AuthURL)
			_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			require.NoError(t, err)
			_, ok, err := h.log.Secret(h.ctx, "client/conn/gh/")
			require.NoError(t, err)
			require.True(t, ok)

			h.connect("")
			assert.Equal(t, clientID, h.prov.LastRequest().Form.Get("client_id"))
			_, ok, err = h.log.Secret(h.ctx, "client/conn/gh/")
			require.NoError(t, err)
			assert.False(t, ok, "no client secret outlives its connection")
			h.clk.Advance(2 * time.Hour)
			_, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			require.NoError(t, err)
			assert.Empty(t, stored.ClientID)
			assert.Equal(t, clientID, h.prov.LastRequest().Form.Get("client_id"))
			conns, err := h.e.Connections(h.ctx)
			require.NoError(t, err)
			require.Len(t, conns, 1)
			assert.Empty(t, conns[0].ClientID, "the configured client again")
			assert.Empty(t, conns[0].Registration)
			assert.Equal(t, clientSecret, h.prov.LastRequest().Form.Get("client_secret"))
		})
	}
}

// A per-start client that cannot work is refused before anything is
// recorded, with an error wrapping ErrBadClient that never names its secret.
func TestPerStartClientValidation(t *testing.T) {
	h := newBYOHarness(t)
	for name, c := range map[string]struct {
		req  engine.StartRequest
		want string
	}{
		"no id":              {engine.StartRequest{Provider: "gh", Client: &engine.Client{Secret: byoSecret}}, "no ID"},
		"control characters": {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: "a\nb", Secret: byoSecret}}, "control characters"},
		"long id":            {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: strings.Repeat("a", 513), Secret: byoSecret}}, "more than 512"},
		"unknown method":     {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: "private_key_jwt"}}, `"private_key_jwt" is not none`},
		"none with secret":   {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: engine.AuthMethodNone}}, "drop the secret"},
		"basic no secret":    {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, AuthMethod: engine.AuthMethodClientSecretBasic}}, "needs a client secret"},
		"post no secret":     {engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, AuthMethod: engine.AuthMethodClientSecretPost}}, "needs a client secret"},
		"device":             {engine.StartRequest{Provider: "gh", Transport: states.Device, Client: &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: engine.AuthMethodNone}}, "drop the secret"},
		"mcp server":         {engine.StartRequest{Resource: "https://mcp.example.test/mcp", Client: byoClient()}, "MCP server"},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(dump(t, h.log))
			_, err := h.e.Start(h.ctx, c.req)
			require.ErrorIs(t, err, engine.ErrBadClient)
			assert.Contains(t, err.Error(), c.want)
			assert.NotContains(t, err.Error(), byoSecret)
			assert.Len(t, dump(t, h.log), before, "nothing recorded")
		})
	}
	assert.Equal(t, 0, h.prov.Calls())
	// A public per-start client (no secret, method none) is valid; the
	// provider here has no public clients, which is its business.
	_, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: "public-app"}})
	require.NoError(t, err)
}

// The device transport polls as the per-start client too, also after a
// restart, and the connection it makes refreshes as that client.
func TestPerStartClientDevice(t *testing.T) {
	h := newDeviceHarness(t, nil)
	h.prov.AddClient(byoID, byoSecret)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Transport: states.Device, Client: byoClient()})
	require.NoError(t, err)
	h.restart()
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	f, err := h.e.Wait(h.ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State, "%s: %s", f.ErrorCode, f.Message)
	assertAsBYO(t, h, "polled as the per-start client")
	h.clk.Advance(2 * time.Hour)
	_, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, byoID, stored.ClientID)
	assertAsBYO(t, h, "refreshed as the per-start client")
	assertNoSecrets(t, h, st)
	assert.Contains(t, h.prov.Secrets(), byoSecret, "the scan knew the client secret")
}

// With an embedder's TokenStore the token goes there, carrying the
// client's ID only; the client's secret stays sealed in the Log, and the
// refresh and the disconnect still use it.
func TestPerStartClientCustomTokenStore(t *testing.T) {
	ts := &mapTokens{m: map[engine.TokenKey]engine.StoredToken{}}
	var prov *oauthtest.Server
	h := newHarness(t, func(c *engine.Config) {
		prov = oauthtest.New(t, oauthtest.Options{})
		p := providerConfig(prov, "gh")
		p.RevocationURL = prov.URL + oauthtest.RevokePath
		c.Providers, c.Tokens = []engine.Provider{p}, ts
	})
	h.prov = prov
	prov.AddClient(byoID, byoSecret)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	ts.mu.Lock()
	saved := ts.m[engine.TokenKey{Provider: "gh"}]
	ts.mu.Unlock()
	assert.Equal(t, byoID, saved.ClientID, "the store is told which client the token is for")

	h.restart()
	h.clk.Advance(2 * time.Hour)
	_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assertAsBYO(t, h, "refreshed as the per-start client")
	res, err := h.e.Disconnect(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	assert.Equal(t, states.RevocationDone, res.Revocation)
	_, ok, err := h.log.Secret(h.ctx, "client/conn/gh/")
	require.NoError(t, err)
	assert.False(t, ok, "the client goes with the connection")
}

// A per-start flow that ends without connecting (canceled here) drops its
// client with its other secrets.
func TestPerStartClientDroppedWithTheFlow(t *testing.T) {
	h := newBYOHarness(t)
	st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Client: byoClient()})
	require.NoError(t, err)
	_, ok, err := h.log.Secret(h.ctx, "client/flow/"+st.ID)
	require.NoError(t, err)
	require.True(t, ok, "sealed with the flow")
	_, err = h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	_, ok, err = h.log.Secret(h.ctx, "client/flow/"+st.ID)
	require.NoError(t, err)
	assert.False(t, ok, "dropped when the flow ended")
}
