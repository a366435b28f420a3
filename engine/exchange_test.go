package engine_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/states"
)

func TestExchangeGrantedScopes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scope     string
		omit      bool
		requested []string
		want      []string
	}{
		{name: "space separated", scope: "repo read:user gist", want: []string{"repo", "read:user", "gist"}},
		{name: "comma separated", scope: "repo,read:user", want: []string{"repo", "read:user"}},
		{name: "absent means the requested scopes", omit: true, requested: []string{"repo", "workflow"}, want: []string{"repo", "workflow"}},
		{name: "absent with provider defaults", omit: true, want: []string{"repo", "read:user"}},
		{name: "empty string means the requested scopes", scope: "", want: []string{"repo", "read:user"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if !tc.omit {
				h.prov.SetScope(tc.scope)
			}
			st, err := h.e.Start(h.ctx, engine.StartRequest{Provider: "gh", Scopes: tc.requested})
			require.NoError(t, err)
			_, code := h.prov.Authorize(t, st.AuthURL)
			f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			require.NoError(t, err)
			assert.Equal(t, states.Complete, f.State)
			assert.Equal(t, states.Exchanged, f.Reason)
			assert.Equal(t, tc.want, f.GrantedScopes)
			assert.True(t, f.TokenStored)
			assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.ExchangeStarted, states.ExchangeSucceeded}, h.events(st.ID))

			tok, stored, err := h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			require.NoError(t, err)
			assert.Equal(t, h.prov.Issued()[0], tok.AccessToken)
			assert.Equal(t, tc.want, stored.Scopes)
			assert.Equal(t, st.ID, stored.Flow)
		})
	}
}

// The verifier sent to the token endpoint is the one whose S256 challenge
// went out in the authorization URL, and it is sent with the redirect URI
// the URL named.
func TestExchangeSendsMatchingVerifier(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	req := h.prov.LastRequest()
	assert.Equal(t, "authorization_code", req.GrantType)
	assert.Equal(t, code, req.Code)
	assert.Len(t, req.Verifier, 43, "32 random bytes, base64url")
	assert.Equal(t, oauthtest.S256(req.Verifier), queryOf(t, st.AuthURL).Get("code_challenge"))
	assert.Equal(t, st.RedirectURI, req.RedirectURI)
	assert.Equal(t, engine.DefaultLoopbackRedirectURL, st.RedirectURI)
}

func TestExchangeHonoursAuthMethod(t *testing.T) {
	for _, method := range []string{oauthtest.MethodPost, oauthtest.MethodBasic} {
		t.Run(method, func(t *testing.T) {
			var prov *oauthtest.Server
			h := newHarness(t, func(c *engine.Config) {
				prov = oauthtest.New(t, oauthtest.Options{AuthMethods: []string{method}})
				c.Providers = []engine.Provider{providerConfig(prov, "gh")}
			})
			h.prov = prov
			h.connect("")
			req := prov.LastRequest()
			if method == oauthtest.MethodBasic {
				assert.True(t, req.HasBasic)
				assert.Equal(t, clientID, req.BasicUser)
				assert.False(t, req.Form.Has("client_secret"), "the secret must not also travel in the body")
			} else {
				assert.False(t, req.HasBasic)
				assert.Equal(t, clientID, req.Form.Get("client_id"))
				assert.Equal(t, clientSecret, req.Form.Get("client_secret"))
			}
			assert.Equal(t, 1, prov.Calls(), "a fixed auth method never retries")
		})
	}
}

func TestExchangeFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		closed  bool
		// authorize=false sends a code the provider never issued.
		bogusCode  bool
		wantStatus int
		wantCode   string
	}{
		{name: "oauth error json", bogusCode: true, wantStatus: 400, wantCode: "invalid_grant"},
		{name: "http 500 with html", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(500)
			_, _ = w.Write([]byte("<html><body>Internal Server Error</body></html>"))
		}, wantStatus: 500, wantCode: "http_error"},
		{name: "network failure", closed: true, wantCode: "network_error"},
		{name: "200 carrying an error field", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}`))
		}, wantStatus: 200, wantCode: "bad_verification_code"},
		{name: "200 with html", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>login page</html>"))
		}, wantCode: "invalid_response"},
		{name: "200 with garbage json", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_tok`))
		}, wantCode: "invalid_response"},
		{name: "200 without access token", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"token_type":"bearer"}`))
		}, wantCode: "invalid_response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.prov.SetOverride(tc.handler)
			st := h.start("")
			code := codePrefix + "never-issued"
			if !tc.bogusCode {
				_, code = h.prov.Authorize(t, st.AuthURL)
			}
			if tc.closed {
				h.prov.Close()
			}
			f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			require.NoError(t, err, "a failed exchange is an outcome of the flow, not an error of the call")
			assert.Equal(t, states.Error, f.State)
			assert.Equal(t, states.ExchangeFailed, f.Reason)
			assert.Equal(t, tc.wantStatus, f.HTTPStatus)
			assert.Equal(t, tc.wantCode, f.ErrorCode)
			assert.NotEmpty(t, f.Message, "the user is told something")
			assert.NotContains(t, f.Message, code)
			assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.ExchangeStarted, states.Failed}, h.events(st.ID))
			if !tc.closed {
				assert.Equal(t, 1, h.prov.Calls())
			}
			_, _, err = h.e.Token(h.ctx, engine.TokenKey{Provider: "gh"})
			assert.ErrorIs(t, err, engine.ErrNoToken)
			// The failure is final and the code is spent: a retry of the
			// callback does not exchange again.
			_, err = h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			assert.ErrorIs(t, err, engine.ErrNotAwaiting)
			if !tc.closed {
				assert.Equal(t, 1, h.prov.Calls())
			}
		})
	}
}

func TestExchangeOAuthErrorKeepsProviderText(t *testing.T) {
	h := newHarness(t)
	st := h.start("")
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: codePrefix + "unknown"})
	require.NoError(t, err)
	assert.Equal(t, "invalid_grant", f.ErrorCode)
	assert.Equal(t, 400, f.HTTPStatus)
	assert.Equal(t, "unknown code", f.Message)
}

// callbackToStalledProvider delivers the callback of a flow whose token
// endpoint never answers, on an engine configured by opt, and returns the
// flow as the callback left it.
func callbackToStalledProvider(t *testing.T, opt harnessOption) states.Flow {
	t.Helper()
	h := newHarness(t, opt)
	h.prov.Hold() // released when the test ends, so the server can close
	st := h.start("")
	_, code := h.prov.Authorize(t, st.AuthURL)
	f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	return f
}

func TestExchangeTimeout(t *testing.T) {
	f := callbackToStalledProvider(t, func(c *engine.Config) { c.ExchangeTimeout = 200 * time.Millisecond })
	assert.Equal(t, states.Error, f.State)
	assert.Equal(t, states.ExchangeFailed, f.Reason)
	assert.Equal(t, "timeout", f.ErrorCode)
	assert.Zero(t, f.HTTPStatus)
}

// A client the embedder supplies is used for the exchange, and its own
// timeout is reported as a timeout too.
func TestExchangeCustomHTTPClientTimeout(t *testing.T) {
	f := callbackToStalledProvider(t, func(c *engine.Config) {
		c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond}
	})
	assert.Equal(t, states.ExchangeFailed, f.Reason)
	assert.Equal(t, "timeout", f.ErrorCode)
}

// Duplicate callbacks that arrive while the code is being exchanged are
// turned away at once and recorded; the token endpoint sees the code once.
func TestExchangeOncePerCodeWhileInProgress(t *testing.T) {
	h := newHarness(t)
	st, code, finish := h.exchanging() // the exchange is at the token endpoint now

	const dups = 8
	var wg sync.WaitGroup
	errs := make(chan error, dups)
	for range dups {
		wg.Go(func() {
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
			errs <- err
		})
	}
	wg.Wait() // the duplicates return without waiting for the exchange
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, engine.ErrNotAwaiting)
		var fe *engine.FlowError
		require.True(t, errors.As(err, &fe))
		assert.True(t, fe.Flow.Exchanging)
	}
	// Cancel cannot take it away mid-exchange either.
	_, err := h.e.Cancel(h.ctx, st.ID)
	assert.ErrorIs(t, err, engine.ErrExchangeInProgress)

	_, err = finish()
	require.NoError(t, err)
	f := h.status(st.ID)
	assert.Equal(t, states.Complete, f.State)
	assert.Equal(t, dups, f.IgnoredCallbacks)
	assert.Equal(t, 1, h.prov.Calls())

	hist, err := h.e.History(h.ctx, st.ID)
	require.NoError(t, err)
	ignored := 0
	for _, r := range hist {
		if r.Event == states.CallbackIgnored {
			ignored++
			assert.Equal(t, states.IgnoredInProgress, r.Data.Ignored)
			assert.NotEmpty(t, r.Data.CodeFingerprint)
			assert.NotContains(t, r.Data.CodeFingerprint, code)
		}
	}
	assert.Equal(t, dups, ignored)
	checkReplay(t, h.log)
}

// A burst of late callbacks on a finished flow (a browser re-sending the
// redirect, a proxy retrying it): each is told the flow is not awaiting a
// callback and each is recorded, however many arrive at once. They used
// to race each other for the flow's next sequence number and the losers
// of four rounds got "flow sequence conflict" back, unrecorded.
func TestLateCallbackBurstOnFinishedFlow(t *testing.T) {
	h := newHarness(t)
	f := h.connect("")
	code := h.prov.LastRequest().Code
	const n = 32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			_, err := h.e.Callback(h.ctx, engine.CallbackParams{State: f.ID, Code: code})
			assert.ErrorIs(t, err, engine.ErrNotAwaiting)
		})
	}
	close(start)
	wg.Wait()
	assert.Equal(t, n, countEvents(t, h, f.ID, states.CallbackIgnored), "every late callback is in the history")
	assert.Equal(t, states.Complete, h.status(f.ID).State)
	assert.Equal(t, 1, h.prov.Calls(), "the code reached the token endpoint once")
	checkReplay(t, h.log)
}

// Truly concurrent duplicates, no choreography: exactly one wins, the
// token endpoint sees the code once, every other call is recorded as
// ignored for one of the two legal reasons.
func TestExchangeOncePerCodeConcurrent(t *testing.T) {
	for round := range 20 {
		_ = round
		h := newHarness(t)
		st := h.start("")
		_, code := h.prov.Authorize(t, st.AuthURL)
		const n = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, turnedAway := 0, 0
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				f, err := h.e.Callback(h.ctx, engine.CallbackParams{State: st.ID, Code: code})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won++
					assert.Equal(t, states.Complete, f.State)
					return
				}
				assert.ErrorIs(t, err, engine.ErrNotAwaiting)
				turnedAway++
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, 1, won)
		require.Equal(t, n-1, turnedAway)
		require.Equal(t, 1, h.prov.Calls())
		hist, err := h.e.History(h.ctx, st.ID)
		require.NoError(t, err)
		ignored := 0
		for _, r := range hist {
			if r.Event == states.CallbackIgnored {
				ignored++
				assert.Contains(t, []states.Ignored{states.IgnoredInProgress, states.IgnoredFinished}, r.Data.Ignored)
			}
		}
		require.Equal(t, n-1, ignored)
		checkReplay(t, h.log)
		require.NoError(t, h.e.Close())
	}
}
