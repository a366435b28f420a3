package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/engine/mcpauth"
	"github.com/flowdhq/flowd/internal/mcptest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// mcpEngine opens an engine with no configured providers on log.
func mcpEngine(t *testing.T, log engine.Log, clk *fakeclock.Clock) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Config{Log: log, Clock: clk, ExchangeTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func openDB(t *testing.T, path string) *persist.DB {
	t.Helper()
	db, err := persist.Open(path, persist.Options{})
	require.NoError(t, err)
	return db
}

func TestMCPConnectByResourceURLRecordsWhyItWentWhere(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	log := openDB(t, filepath.Join(t.TempDir(), "flowd.db"))
	t.Cleanup(func() { _ = log.Close() })
	e := mcpEngine(t, log, fakeclock.New(epoch))

	// The URL as a user types it: flowd names the connection canonically.
	st, err := e.Start(ctx, engine.StartRequest{Resource: strings.Replace(f.Resource(), "http://127.0.0.1", "HTTP://127.0.0.1", 1) + "/"})
	require.NoError(t, err)
	hist, err := e.History(ctx, st.ID)
	require.NoError(t, err)
	d := hist[0].Data
	assert.Equal(t, f.Resource(), d.Provider)
	assert.Equal(t, f.Resource(), d.Resource)
	assert.Equal(t, f.Srv.URL+"/as", d.Issuer, "the authorization server discovery chose is the flow's issuer")
	assert.Equal(t, f.Srv.URL+"/.well-known/oauth-protected-resource/mcp", d.ResourceMetadataURL)
	assert.Equal(t, f.Srv.URL+"/.well-known/oauth-authorization-server/as", d.ServerMetadataURL)
	assert.Equal(t, engine.RegisteredDynamic, d.Registration)
	assert.Equal(t, "dcr-client-1", d.ClientID)
	assert.Equal(t, "client_secret_basic", d.TokenAuth)
	assert.Equal(t, []string{"mcp:read"}, d.Scopes)
	assert.Equal(t, mcpauth.ScopeFromChallenge, d.ScopeSource)
	require.Len(t, d.Discovery, 3)
	assert.Equal(t, "probe "+f.Resource()+" 401 challenged", d.Discovery[0])

	fl, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: f.Authorize(st.AuthURL), Issuer: f.Srv.URL + "/as"})
	require.NoError(t, err)
	require.Equal(t, states.Complete, fl.State, "%s %s", fl.ErrorCode, fl.Message)
	tok, _, err := e.Token(ctx, engine.TokenKey{Provider: f.Resource()})
	require.NoError(t, err)
	assert.Equal(t, "MCP-ACCESS-S3CR3T-1", tok.AccessToken)

	conns, err := e.MCPConnections(ctx)
	require.NoError(t, err)
	require.Len(t, conns, 1)
	assert.Equal(t, f.Srv.URL+"/as", conns[0].AuthServer)

	// The export holds the registration as data, never its secret.
	var exported strings.Builder
	require.NoError(t, e.Export(ctx, engine.ExportQuery{}, func(r states.Record) error {
		b, err := r.Encode()
		exported.Write(b)
		return err
	}))
	assert.Contains(t, exported.String(), "dcr-client-1")
	assert.NotContains(t, exported.String(), mcptest.DCRSecretPrefix)
	assert.NotContains(t, exported.String(), "MCPCODE-S3CR3T")
}

func TestMCPRestartBetweenRegistrationAndCallback(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	path := filepath.Join(t.TempDir(), "flowd.db")
	clk := fakeclock.New(epoch)

	db := openDB(t, path)
	e := mcpEngine(t, db, clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
	require.NoError(t, err)
	code := f.Authorize(st.AuthURL)
	require.NoError(t, e.Close())
	require.NoError(t, db.Close())

	// A new process: nothing in memory. The connection and the registered
	// client's secret come back from the sealed store; the token endpoint
	// accepts only that secret, by HTTP Basic, with the resource.
	db = openDB(t, path)
	t.Cleanup(func() { _ = db.Close() })
	e = mcpEngine(t, db, clk)
	fl, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code, Issuer: f.Srv.URL + "/as"})
	require.NoError(t, err)
	require.Equal(t, states.Complete, fl.State, "%s %s", fl.ErrorCode, fl.Message)

	// A later connect to the same server reuses the registration.
	st2, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
	require.NoError(t, err)
	hist, err := e.History(ctx, st2.ID)
	require.NoError(t, err)
	assert.Equal(t, engine.RegisteredReused, hist[0].Data.Registration)
	assert.Equal(t, "dcr-client-1", hist[0].Data.ClientID)
	assert.Equal(t, 1, f.Registered(), "one registration for two connects across a restart")
}

func TestMCPFlowExpiresAndTheRegistrationOutlivesIt(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	clk := fakeclock.New(epoch)
	log := openDB(t, filepath.Join(t.TempDir(), "flowd.db"))
	t.Cleanup(func() { _ = log.Close() })
	e := mcpEngine(t, log, clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource(), TTL: time.Minute})
	require.NoError(t, err)
	clk.Advance(time.Minute)
	fl, err := e.Wait(ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Expired, fl.State)
	_, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: f.Authorize(st.AuthURL)})
	require.ErrorIs(t, err, engine.ErrNotAwaiting, "a late callback changes nothing")

	st2, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
	require.NoError(t, err)
	fl, err = e.Callback(ctx, engine.CallbackParams{State: st2.ID, Code: f.Authorize(st2.AuthURL), Issuer: f.Srv.URL + "/as"})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, fl.State)
	assert.Equal(t, 1, f.Registered())
}

func TestMCPRefusesAServerWithoutS256(t *testing.T) {
	ctx := context.Background()
	for name, methods := range map[string][]string{"plain only": {"plain"}, "no PKCE listed": nil} {
		t.Run(name, func(t *testing.T) {
			f := mcptest.New(t)
			f.Methods = methods
			e := mcpEngine(t, openMem(), fakeclock.New(epoch))
			_, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
			require.ErrorIs(t, err, mcpauth.ErrNoS256)
			assert.Contains(t, err.Error(), "code_challenge_methods_supported")
			flows, err := e.List(ctx, engine.Filter{})
			require.NoError(t, err)
			assert.Empty(t, flows, "nothing started")
			assert.Zero(t, f.Registered(), "no client registered at a server flowd refuses")
		})
	}
}

func TestMCPRefusesMetadataNamingAnotherResource(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	f.PRMResource = "https://evil.example.com/mcp"
	e := mcpEngine(t, openMem(), fakeclock.New(epoch))
	_, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
	require.ErrorIs(t, err, mcpauth.ErrResourceMismatch)
	assert.Contains(t, err.Error(), "https://evil.example.com/mcp")
	flows, err := e.List(ctx, engine.Filter{})
	require.NoError(t, err)
	assert.Empty(t, flows)
	assert.Zero(t, f.Registered())
}

func TestMCPRefreshNamesTheResource(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	clk := fakeclock.New(epoch)
	e := mcpEngine(t, openMem(), clk)
	st, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
	require.NoError(t, err)
	_, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: f.Authorize(st.AuthURL), Issuer: f.Srv.URL + "/as"})
	require.NoError(t, err)
	clk.Advance(time.Hour)
	tok, _, err := e.Token(ctx, engine.TokenKey{Provider: f.Resource()})
	require.NoError(t, err)
	assert.Equal(t, "MCP-ACCESS-S3CR3T-2", tok.AccessToken, "refreshed")
	f.Mu.Lock()
	defer f.Mu.Unlock()
	assert.Equal(t, []string{f.Resource()}, f.Resources["refresh_token"])
}

func TestMCPStepUpAsksForGrantedAndRequiredScopesOnce(t *testing.T) {
	ctx := context.Background()
	f := mcptest.New(t)
	e := mcpEngine(t, openMem(), fakeclock.New(epoch))
	connect := func(challenge string) (states.Flow, error) {
		st, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource(), Challenge: challenge})
		if err != nil {
			return states.Flow{}, err
		}
		return e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: f.Authorize(st.AuthURL), Issuer: f.Srv.URL + "/as"})
	}
	fl, err := connect("")
	require.NoError(t, err)
	require.Equal(t, []string{"mcp:read"}, fl.GrantedScopes)

	stepUp := fmt.Sprintf(`Bearer error="insufficient_scope", scope="mcp:write", resource_metadata="%s/.well-known/oauth-protected-resource/mcp"`, f.Srv.URL)
	fl, err = connect(stepUp)
	require.NoError(t, err)
	assert.Equal(t, []string{"mcp:read", "mcp:write"}, fl.Scopes, "the union of granted and required")
	hist, err := e.History(ctx, fl.ID)
	require.NoError(t, err)
	assert.Equal(t, "step_up", hist[0].Data.ScopeSource)

	// The resource asks again for what the token has: flowd refuses to
	// loop through another authorization.
	_, err = connect(stepUp)
	require.ErrorIs(t, err, engine.ErrStepUpFutile)
	assert.Equal(t, 1, f.Registered())
	assert.True(t, slices.Equal(fl.GrantedScopes, []string{"mcp:read", "mcp:write"}))
}

func openMem() engine.Log { return memlog.New() }

func TestMCPRegistrationLadder(t *testing.T) {
	ctx := context.Background()
	t.Run("pre-registered client first", func(t *testing.T) {
		f := mcptest.New(t)
		f.AddClient("pre-client", "PRE-S3CR3T")
		e, err := engine.Open(ctx, engine.Config{Log: openMem(), Clock: fakeclock.New(epoch), MCP: engine.MCPConfig{
			Clients: []engine.MCPClient{{Server: f.Srv.URL + "/as", ClientID: "pre-client", ClientSecret: "PRE-S3CR3T"}}}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.Close() })
		st, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
		require.NoError(t, err)
		fl, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: f.Authorize(st.AuthURL), Issuer: f.Srv.URL + "/as"})
		require.NoError(t, err)
		require.Equal(t, states.Complete, fl.State, "%s %s", fl.ErrorCode, fl.Message)
		hist, err := e.History(ctx, st.ID)
		require.NoError(t, err)
		assert.Equal(t, engine.RegisteredPre, hist[0].Data.Registration)
		assert.Equal(t, "client_secret_basic", hist[0].Data.TokenAuth, "chosen from the server's metadata")
		assert.Zero(t, f.Registered())
	})
	t.Run("no way to register", func(t *testing.T) {
		f := mcptest.New(t)
		f.NoRegistration = true
		e := mcpEngine(t, openMem(), fakeclock.New(epoch))
		_, err := e.Start(ctx, engine.StartRequest{Resource: f.Resource()})
		require.ErrorIs(t, err, engine.ErrNoClient)
		assert.Contains(t, err.Error(), f.Srv.URL+"/as")
	})
}
