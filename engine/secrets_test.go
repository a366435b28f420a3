package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// After a run that touches every path a secret takes (codes exchanged,
// refused and replayed, verifiers sealed and deleted, tokens stored and
// rotated, the client secret sent in both auth styles, a per-start
// client's secret sealed, sent, echoed back and refused), none of the
// secrets appears in the database file, the key-less export of its
// records, the engine's logs, or any error the engine returned. They live
// only sealed, in the secrets bucket.
func TestSecretsNeverLeak(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "flowd.db")
	db, err := persist.Open(path, persist.Options{})
	require.NoError(t, err)
	defer db.Close()

	params := oauthtest.New(t, oauthtest.Options{})
	header := oauthtest.New(t, oauthtest.Options{AuthMethods: []string{oauthtest.MethodBasic}})
	logs := &syncbuf.Buffer{}
	clk := fakeclock.New(epoch)
	cfg := engine.Config{Log: db, Clock: clk, Logger: newTestLogger(logs), ExchangeTimeout: 5 * time.Second,
		Providers: []engine.Provider{providerConfig(params, "gh"), providerConfig(header, "gl")}}
	e, err := engine.Open(ctx, cfg)
	require.NoError(t, err)

	var errs []error
	note := func(_ any, err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var codes, verifiers []string
	start := func(provider, account string) engine.Started {
		st, err := e.Start(ctx, engine.StartRequest{Provider: provider, Account: account})
		require.NoError(t, err)
		return st
	}
	// Complete flows on both providers, with late duplicates of their codes.
	for _, p := range []struct {
		name string
		prov *oauthtest.Server
	}{{"gh", params}, {"gl", header}} {
		st := start(p.name, "")
		_, code := p.prov.Authorize(t, st.AuthURL)
		codes = append(codes, code)
		f, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code})
		require.NoError(t, err)
		require.Equal(t, states.Complete, f.State)
		note(e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code}))
	}
	// A code the provider refuses.
	st := start("gh", "b")
	forged := codePrefix + "forged-0001"
	codes = append(codes, forged)
	f, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: forged})
	require.NoError(t, err)
	require.Equal(t, states.ExchangeFailed, f.Reason)
	// A token endpoint that answers 500 with a body echoing the request.
	params.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(500)
		_, _ = w.Write([]byte("debug dump: " + r.PostForm.Encode()))
	})
	st = start("gh", "c")
	_, code := params.Authorize(t, st.AuthURL)
	codes = append(codes, code)
	note(e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code}))
	// A provider whose OAuth error echoes everything it was sent.
	params.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		oauthtest.WriteError(w, 400, "invalid_grant", "rejected "+r.PostForm.Get("code")+" with "+r.PostForm.Get("code_verifier")+" for "+r.PostForm.Get("client_secret"))
	})
	st = start("gh", "c2")
	_, code = params.Authorize(t, st.AuthURL)
	codes = append(codes, code)
	f, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Contains(t, f.Message, "rejected [redacted] with [redacted] for [redacted]")
	params.SetOverride(nil)
	// A provider error that comes with a code.
	st = start("gh", "c3")
	_, code = params.Authorize(t, st.AuthURL)
	codes = append(codes, code)
	note(e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code, Error: "access_denied", ErrorDescription: "denied " + code}))
	// Denied, canceled, expired, and one still awaiting at the end.
	st = start("gh", "d")
	note(e.Callback(ctx, engine.CallbackParams{State: st.ID, Error: "access_denied"}))
	st = start("gh", "e")
	note(e.Cancel(ctx, st.ID))
	expiring := start("gh", "f")
	clk.Advance(engine.DefaultTTL)
	note(e.Callback(ctx, engine.CallbackParams{State: expiring.ID, Code: codePrefix + "late"}))
	awaiting := start("gh", "g")
	v, ok, err := db.Secret(ctx, "verifier/"+awaiting.ID)
	require.NoError(t, err)
	require.True(t, ok, "an awaiting flow's verifier is sealed in the log")
	verifiers = append(verifiers, string(v))
	// Tokens: refresh (rotating the refresh token) and a refused refresh.
	clk.Advance(2 * time.Hour)
	_, _, err = e.Token(ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	params.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		oauthtest.WriteError(w, 400, "invalid_grant", "bad refresh token "+r.PostForm.Get("refresh_token"))
	})
	clk.Advance(2 * time.Hour)
	_, _, err = e.Token(ctx, engine.TokenKey{Provider: "gh"})
	require.Error(t, err)
	errs = append(errs, err)
	params.SetOverride(nil)
	_, _, err = e.Token(ctx, engine.TokenKey{Provider: "gl"})
	require.NoError(t, err)
	// A per-start client: refused by a provider echoing its secret,
	// connected, refreshed, disconnected, refused at Start with its secret
	// in hand, and one awaiting its callback through the restart below.
	params.AddClient(byoID, byoSecret)
	byo := &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: engine.AuthMethodClientSecretPost}
	startBYO := func(account string) engine.Started {
		st, err := e.Start(ctx, engine.StartRequest{Provider: "gh", Account: account, Client: byo})
		require.NoError(t, err)
		return st
	}
	params.SetOverride(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		oauthtest.WriteError(w, 400, "invalid_client", "client "+r.PostForm.Get("client_id")+" secret "+r.PostForm.Get("client_secret"))
	})
	st = startBYO("byo-refused")
	_, code = params.Authorize(t, st.AuthURL)
	codes = append(codes, code)
	f, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Contains(t, f.Message, "secret [redacted]")
	params.SetOverride(nil)
	st = startBYO("byo")
	_, code = params.Authorize(t, st.AuthURL)
	codes = append(codes, code)
	f, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State)
	clk.Advance(2 * time.Hour)
	_, _, err = e.Token(ctx, engine.TokenKey{Provider: "gh", Account: "byo"})
	require.NoError(t, err)
	require.Equal(t, byoSecret, params.LastRequest().Form.Get("client_secret"), "sanity: the refresh sent the per-start secret")
	note(e.Disconnect(ctx, engine.TokenKey{Provider: "gh", Account: "byo"}))
	note(e.Start(ctx, engine.StartRequest{Provider: "gh", Client: &engine.Client{Secret: byoSecret}}))
	note(e.Start(ctx, engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: engine.AuthMethodNone}}))
	note(e.Start(ctx, engine.StartRequest{Provider: "gh", Client: &engine.Client{ID: byoID, Secret: byoSecret, AuthMethod: "private_key_jwt"}}))
	byoLate := startBYO("byo-late")
	// An interrupted exchange, through a restart.
	inter := start("gl", "h")
	require.NoError(t, e.Close())
	hist, err := db.History(ctx, inter.ID)
	require.NoError(t, err)
	require.NoError(t, db.Append(ctx, []states.Record{{Version: states.SchemaVersion, Flow: inter.ID, FlowSeq: hist[len(hist)-1].FlowSeq + 1,
		Event: states.ExchangeStarted, From: states.AwaitingCallback, To: states.AwaitingCallback, Time: clk.Now()}}, nil))
	e, err = engine.Open(ctx, cfg)
	require.NoError(t, err)
	note(e.Callback(ctx, engine.CallbackParams{State: inter.ID, Code: codePrefix + "after-crash"}))
	_, code = params.Authorize(t, byoLate.AuthURL)
	codes = append(codes, code)
	f, err = e.Callback(ctx, engine.CallbackParams{State: byoLate.ID, Code: code})
	require.NoError(t, err)
	require.Equal(t, states.Complete, f.State, "the per-start client is read back after the restart")
	require.NoError(t, e.Close())

	for _, p := range []*oauthtest.Server{params, header} {
		for _, r := range p.Requests() {
			if r.Verifier != "" {
				verifiers = append(verifiers, r.Verifier)
			}
		}
	}
	require.GreaterOrEqual(t, len(verifiers), 4)
	secrets := append([]string{clientSecret, byoSecret}, codes...)
	secrets = append(secrets, verifiers...)
	secrets = append(secrets, params.Issued()...)
	secrets = append(secrets, header.Issued()...)
	require.GreaterOrEqual(t, len(secrets), 12)

	// The exported log, as flowctl export would write it.
	var export bytes.Buffer
	for _, rec := range dump(t, db) {
		b, err := rec.Encode()
		require.NoError(t, err)
		export.Write(b)
		export.WriteByte('\n')
	}
	require.NoError(t, db.Close())
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	key, err := os.ReadFile(path + ".key")
	require.NoError(t, err)
	require.Contains(t, string(raw), awaiting.ID, "sanity: the scan sees the records")

	var errText strings.Builder
	for _, err := range errs {
		errText.WriteString(err.Error() + "\n")
	}
	require.NotEmpty(t, logs.String())
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), hex.EncodeToString([]byte(s))} {
			assert.NotContains(t, string(raw), form, "secret in the database file")
			assert.NotContains(t, string(key), form, "secret in the key file")
			assert.NotContains(t, export.String(), form, "secret in the exported log")
			assert.NotContains(t, logs.String(), form, "secret in the engine's logs")
			assert.NotContains(t, errText.String(), form, "secret in an error")
		}
	}
}
