package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// The logs in testdata/replay/engine are exports of the real engine
// (engine.Open on the bbolt log, Engine.Export, Record.Encode), run through
// each scenario below against a fake token endpoint. The engine runs on a
// fake clock from a fixed epoch and a seeded random source, so a recording
// is the same bytes every time: without -record, TestRecordings runs every
// scenario again and requires the fresh export to equal the checked-in
// one, so a change to what the engine writes cannot go unnoticed. With
// -record it rewrites the logs and their .golden files; review the diff.
var record = flag.Bool("record", false, "re-record testdata/replay/engine/*.jsonl (and .golden) from the current engine")

// recordDir is where the engine recordings live.
var recordDir = filepath.Join(testdata, "engine")

// recEpoch is where every recording's clock starts.
var recEpoch = time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)

const (
	recClientID     = "flowd-recorder"
	recClientSecret = "CLIENT-SECRET-recorder-d0ntl34k"
	// recPublicBase is the gateway's public base URL.
	recPublicBase = "https://connect.example.com"
	// recLatency is how long the fake token endpoint takes, on the fake clock.
	recLatency = 180 * time.Millisecond
	// recDowntime is how long a restart keeps flowd down, on the fake clock.
	recDowntime = 2 * time.Second
)

// recording is one scenario run through the real engine.
type recording struct {
	name string
	// what it shows, for the README's table and failure messages.
	what string
	run  func(s *session)
}

var recordings = []recording{
	{"happy_loopback", "loopback transport; the token response has no scope field, so the requested scopes are granted", func(s *session) {
		s.open()
		for _, step := range happySteps() {
			step(s)
		}
	}},
	{"happy_gateway", "gateway transport (public base URL); the provider grants fewer scopes than requested", func(s *session) {
		s.open()
		s.prov.SetScope("openid email")
		st := s.start(engine.StartRequest{Provider: "google", Account: "alice@example.com", Transport: states.Gateway,
			Scopes: []string{"openid", "email", "https://www.googleapis.com/auth/drive.readonly"}})
		require.Equal(s.t, recPublicBase+engine.CallbackPath, st.RedirectURI)
		s.clk.Advance(23 * time.Second)
		f := s.callback(st, s.authorize(st.AuthURL))
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, []string{"openid", "email"}, f.GrantedScopes)
		s.tokenStored("google", "alice@example.com", true)
	}},
	{"happy_manual", "manual transport (the user pastes the URL); granted scopes from a comma-separated scope field", func(s *session) {
		s.open()
		s.prov.SetScope("repo,read:user")
		st := s.start(engine.StartRequest{Provider: "github", Transport: states.Manual})
		s.clk.Advance(41 * time.Second)
		f := s.callback(st, s.authorize(st.AuthURL))
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, []string{"repo", "read:user"}, f.GrantedScopes)
		assert.Equal(s.t, states.Manual, f.Transport)
		s.tokenStored("github", "", true)
	}},
	{"provider_denied", "the user denies access at the provider: error(provider_denied) with the provider's words, no token", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(9 * time.Second)
		f, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied",
			ErrorDescription: "The user has denied your application access."})
		require.NoError(s.t, err)
		s.outcome(f, states.Error, states.ProviderDenied)
		assert.Equal(s.t, "access_denied", f.ErrorCode)
		assert.Zero(s.t, s.prov.CodeRequests(), "nothing to exchange")
		s.tokenStored("github", "", false)
	}},
	{"exchange_failed", "the token endpoint refuses the code: HTTP 400 invalid_grant, no token", func(s *session) {
		s.open()
		s.prov.Refuse("invalid_grant", "The authorization code has expired.")
		st := s.start(engine.StartRequest{Provider: "google", Scopes: []string{"openid", "email"}})
		s.clk.Advance(14 * time.Second)
		f := s.callback(st, s.authorize(st.AuthURL))
		s.outcome(f, states.Error, states.ExchangeFailed)
		assert.Equal(s.t, 400, f.HTTPStatus)
		assert.Equal(s.t, "invalid_grant", f.ErrorCode)
		s.tokenStored("google", "", false)
	}},
	{"exchange_interrupted", "flowd dies while the token endpoint answers; the next Open ends the flow error(exchange_interrupted) and never redeems the code again", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(12 * time.Second)
		code := s.authorize(st.AuthURL)
		release := s.prov.Hold()
		done := s.callbackAsync(st, code)
		s.prov.WaitEntered(s.t)
		// The crash: the process's handle on the database goes away with
		// exchange_started the last record of the flow. The engine is
		// abandoned, not closed: nothing it does from here reaches the log.
		zombie := s.crash()
		s.clk.Advance(recDowntime)
		s.open()
		release()
		res := <-done
		require.Error(s.t, res.err, "the dead engine cannot record the exchange's outcome")
		require.NoError(s.t, zombie.Close())
		f := s.status(st.ID)
		s.outcome(f, states.Error, states.ExchangeInterrupted)
		assert.Equal(s.t, 1, s.prov.CodeRequests(), "the code went to the provider once")
		_, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: code})
		require.ErrorIs(s.t, err, engine.ErrNotAwaiting, "the browser's retry is refused")
		assert.Equal(s.t, 1, s.prov.CodeRequests(), "the retry did not redeem the code again")
		s.tokenStored("github", "", false)
	}},
	{"expired", "nobody comes back: the running engine ends the flow at its deadline", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(engine.DefaultTTL)
		f, err := s.eng.Wait(s.ctx, st.ID)
		require.NoError(s.t, err)
		s.outcome(f, states.Expired, states.DeadlineExpired)
		assert.Equal(s.t, f.Deadline, f.Ended, "expired at its deadline, not later")
	}},
	{"expired_while_down", "the deadline passes while flowd is down; the next Open expires the flow once", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github", Transport: states.Manual})
		s.clk.Advance(20 * time.Second)
		s.close()
		s.clk.Advance(2*time.Hour + 17*time.Minute)
		s.open()
		f := s.status(st.ID)
		s.outcome(f, states.Expired, states.ExpiredWhileDown)
	}},
	{"issuer_mismatch", "redirects with a wrong iss and with none from an issuer that promises iss (RFC 9207): error(issuer_mismatch) before any exchange, the code never sent; the right iss completes", func(s *session) {
		idp := recProviderConfig(s.prov, "idp", "openid")
		idp.Issuer, idp.RequireIssuer = recIssuer, true
		s.cfg.Providers = append(s.cfg.Providers, idp)
		s.open()
		st := s.start(engine.StartRequest{Provider: "idp"})
		s.clk.Advance(11 * time.Second)
		f, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: s.authorize(st.AuthURL), Issuer: "https://attacker.example.test"})
		require.NoError(s.t, err)
		s.outcome(f, states.Error, states.IssuerMismatch)
		st = s.start(engine.StartRequest{Provider: "idp", Account: "bob"})
		s.clk.Advance(8 * time.Second)
		f, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: s.authorize(st.AuthURL)})
		require.NoError(s.t, err)
		s.outcome(f, states.Error, states.IssuerMismatch)
		assert.Zero(s.t, s.prov.CodeRequests(), "no code reached the token endpoint")
		s.tokenStored("idp", "", false)
		st = s.start(engine.StartRequest{Provider: "idp", Account: "carol"})
		s.clk.Advance(7 * time.Second)
		f, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: s.authorize(st.AuthURL), Issuer: recIssuer})
		require.NoError(s.t, err)
		s.outcome(f, states.Complete, states.Exchanged)
	}},
	{"canceled", "the user cancels the flow", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(6 * time.Second)
		f, err := s.eng.Cancel(s.ctx, st.ID)
		require.NoError(s.t, err)
		s.outcome(f, states.Error, states.Canceled)
	}},
	{"provider_removed", "the flow's provider is removed while the user is at its login page; the callback ends the flow without exchange_started, the code unsent", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(9 * time.Second)
		code := s.authorize(st.AuthURL)
		require.NoError(s.t, s.eng.RemoveProvider("github"))
		f := s.callback(st, code)
		s.outcome(f, states.Error, states.ProviderRemoved)
		assert.Zero(s.t, s.prov.CodeRequests(), "the code was not sent")
	}},
	{"superseded", "a second connect for the same account ends the first (superseded, naming the second), which then completes", func(s *session) {
		s.open()
		first := s.start(engine.StartRequest{Provider: "github", Account: "alice"})
		s.clk.Advance(40 * time.Second)
		second := s.start(engine.StartRequest{Provider: "github", Account: "alice"})
		require.Equal(s.t, []string{first.ID}, second.Superseded)
		f := s.status(first.ID)
		s.outcome(f, states.Error, states.Superseded)
		assert.Equal(s.t, second.ID, f.SupersededBy)
		s.clk.Advance(11 * time.Second)
		f = s.callback(second, s.authorize(second.AuthURL))
		s.outcome(f, states.Complete, states.Exchanged)
		s.tokenStored("github", "alice", true)
	}},
	{"late_callback", "a redirect replayed after completion and one arriving after expiry: recorded in the flow's history, nothing changes", func(s *session) {
		s.open()
		a := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(8 * time.Second)
		code := s.authorize(a.AuthURL)
		s.outcome(s.callback(a, code), states.Complete, states.Exchanged)
		s.clk.Advance(4 * time.Second)
		f, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: a.ID, Code: code})
		require.ErrorIs(s.t, err, engine.ErrNotAwaiting)
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, 1, s.prov.CodeRequests(), "the replayed code was not redeemed again")

		b := s.start(engine.StartRequest{Provider: "google", Account: "bob@example.com", Transport: states.Gateway, Scopes: []string{"openid"}})
		late := s.authorize(b.AuthURL)
		s.clk.Advance(engine.DefaultTTL + 90*time.Second)
		f, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: b.ID, Code: late})
		require.ErrorIs(s.t, err, engine.ErrNotAwaiting)
		s.outcome(f, states.Expired, states.DeadlineExpired)
		assert.Equal(s.t, 1, f.IgnoredCallbacks)
		assert.Equal(s.t, 1, s.prov.CodeRequests(), "a code arriving after the deadline is never redeemed")
	}},
	{"exchange_in_progress", "a double-submitted redirect during the exchange is recorded as ignored; the exchange completes", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(10 * time.Second)
		code := s.authorize(st.AuthURL)
		release := s.prov.Hold()
		done := s.callbackAsync(st, code)
		s.prov.WaitEntered(s.t)
		s.clk.Advance(40 * time.Millisecond)
		_, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: code})
		require.ErrorIs(s.t, err, engine.ErrNotAwaiting)
		release()
		res := <-done
		require.NoError(s.t, res.err)
		s.outcome(res.flow, states.Complete, states.Exchanged)
		assert.Equal(s.t, 1, s.prov.CodeRequests())
	}},
	{"live_at_export", "exported while one flow awaits its callback and another is mid-exchange", func(s *session) {
		s.open()
		a := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(3 * time.Second)
		b := s.start(engine.StartRequest{Provider: "google", Transport: states.Gateway, Scopes: []string{"openid"}})
		s.clk.Advance(20 * time.Second)
		release := s.prov.Hold()
		done := s.callbackAsync(b, s.authorize(b.AuthURL))
		s.prov.WaitEntered(s.t)
		s.snapshot()
		release()
		require.NoError(s.t, (<-done).err)
		assert.Equal(s.t, states.AwaitingCallback, s.status(a.ID).State)
	}},
	{"identified", "Config.Identify names who signed in: two GitHub accounts connect one after the other and each keeps its token; an OpenID Connect flow sends a nonce (nonce_fp) and its success record carries account, subject and email", func(s *session) {
		who := engine.Identity{Account: "octocat", Subject: "583231"}
		var nonces []string
		s.cfg.Identify = func(_ context.Context, _ engine.Provider, _ *oauth2.Token, nonce string) (engine.Identity, error) {
			nonces = append(nonces, nonce)
			return who, nil
		}
		s.open()
		a := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(5 * time.Second)
		f := s.callback(a, s.authorize(a.AuthURL))
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, "octocat", f.Account)
		who = engine.Identity{Account: "hubot", Subject: "1000"}
		b := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(5 * time.Second)
		f = s.callback(b, s.authorize(b.AuthURL))
		assert.Equal(s.t, "hubot", f.Account)
		s.tokenStored("github", "octocat", true)
		s.tokenStored("github", "hubot", true)

		who = engine.Identity{Account: "alice@example.com", Subject: "CiQwOGE4Njg0Yi1kYjg4", Email: "alice@example.com"}
		c := s.start(engine.StartRequest{Provider: "google"})
		s.clk.Advance(5 * time.Second)
		f = s.callback(c, s.authorize(c.AuthURL))
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, "alice@example.com", f.Email)
		require.Len(s.t, nonces, 3)
		assert.Equal(s.t, []string{"", ""}, nonces[:2], "no nonce for a provider without openid")
		assert.Equal(s.t, queryOf(s.t, c.AuthURL).Get("nonce"), nonces[2])
		assert.NotEmpty(s.t, nonces[2])
	}},
	{"identity_invalid", "an OpenID Connect flow whose ID token fails verification (its nonce is not the flow's): error(identity_invalid), no token stored", func(s *session) {
		s.cfg.Identify = func(context.Context, engine.Provider, *oauth2.Token, string) (engine.Identity, error) {
			return engine.Identity{}, errors.New("verify the ID token: nonce does not match the one this flow sent")
		}
		s.open()
		st := s.start(engine.StartRequest{Provider: "google"})
		s.clk.Advance(7 * time.Second)
		f := s.callback(st, s.authorize(st.AuthURL))
		s.outcome(f, states.Error, states.IdentityInvalid)
		s.tokenStored("google", "", false)
	}},
	{"browser_bound", "the launch link binds the flow to the browser that opened it; a forged error and an injected code from another local user without the binding cookie are ignored (binding_missing), a wrong cookie too (binding_mismatch), the flow keeps waiting across a restart, and the browser's own callback completes", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github", Launch: true})
		u, err := url.Parse(st.LaunchURL)
		require.NoError(s.t, err)
		s.clk.Advance(900 * time.Millisecond)
		l, err := s.eng.Launch(s.ctx, u.Query().Get(engine.LaunchParam))
		require.NoError(s.t, err)
		s.clk.Advance(3 * time.Second)
		_, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Error: "access_denied", ErrorDescription: "forged"})
		require.ErrorIs(s.t, err, engine.ErrBindingMissing)
		injected := s.authorize(st.AuthURL)
		_, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: injected})
		require.ErrorIs(s.t, err, engine.ErrBindingMissing)
		_, err = s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: injected, Binding: "not-the-binding"})
		require.ErrorIs(s.t, err, engine.ErrBindingMismatch)
		assert.Zero(s.t, s.prov.CodeRequests(), "nothing reached the token endpoint")
		s.restart()
		s.clk.Advance(14 * time.Second)
		f, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: s.authorize(st.AuthURL), Binding: l.Binding})
		require.NoError(s.t, err)
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, 3, f.IgnoredCallbacks)
		s.tokenStored("github", "", true)
	}},
	{"restart_every_step", "the loopback happy path with flowd restarted (Close, 2s down, Open) before, between and after every step: same outcome as without", func(s *session) {
		s.open()
		for _, step := range happySteps() {
			s.restart()
			step(s)
		}
		s.restart()
		// The same steps without restarts, on a log of their own, must
		// come to the same flow: only the flow id and the times differ.
		base := newSession(s.t, "restart_every_step/baseline")
		base.open()
		for _, step := range happySteps() {
			step(base)
		}
		got, want := s.status(s.last.ID), base.status(base.last.ID)
		assert.Equal(s.t, outcomeOf(want), outcomeOf(got))
		assert.Equal(s.t, events(base.history(base.last.ID)), events(s.history(s.last.ID)))
		assert.Equal(s.t, want.Deadline.Sub(want.Created), got.Deadline.Sub(got.Created), "the deadline survived the restarts")
		s.tokenStored("github", "", true)
	}},
	{"device_complete", "device transport (RFC 8628): two polls hear authorization_pending (not recorded), slow_down adds 5 s (poll_slowed), flowd restarts while the user has the code, and the next poll on the recorded schedule gets the token", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "microsoft", Transport: states.Device})
		require.NotNil(s.t, st.Device)
		s.clk.Advance(10 * time.Second) // polls at 5 and 10 s: pending
		s.dev.SlowDownNext()
		s.clk.Advance(5 * time.Second) // at 15 s: slow_down, interval 10 s
		s.restart()                    // down 2 s: back at 17 s, next poll at 25 s
		require.True(s.t, s.dev.ApproveDevice(st.Device.UserCode))
		s.clk.Advance(7 * time.Second)
		d, _ := s.dev.Device(st.Device.UserCode)
		require.Equal(s.t, 3, d.Polls, "no poll at open, none before the schedule")
		s.clk.Advance(time.Second)
		f := s.status(st.ID)
		s.outcome(f, states.Complete, states.Exchanged)
		assert.Equal(s.t, 10*time.Second, f.PollInterval)
		assert.Equal(s.t, 1, d.SlowDowns, "the strict provider said slow_down once")
		s.tokenStored("microsoft", "", true)
	}},
	{"device_denied", "device transport: the user refuses at the provider; the next poll hears access_denied: error(provider_denied)", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "microsoft", Transport: states.Device})
		s.clk.Advance(5 * time.Second)
		require.True(s.t, s.dev.DenyDevice(st.Device.UserCode))
		s.clk.Advance(5 * time.Second)
		f := s.status(st.ID)
		s.outcome(f, states.Error, states.ProviderDenied)
		assert.Equal(s.t, "access_denied", f.ErrorCode)
		s.tokenStored("microsoft", "", false)
	}},
	{"device_expired", "device transport: nobody enters the code; the flow ends at the device code's expiry (deadline_passed(expired)), and a second flow's code runs out while flowd is down (expired_while_down)", func(s *session) {
		s.open()
		s.dev.SetDeviceCodeLifetime(30 * time.Second)
		st := s.start(engine.StartRequest{Provider: "microsoft", Transport: states.Device})
		s.clk.Advance(30 * time.Second)
		s.outcome(s.status(st.ID), states.Expired, states.DeadlineExpired)
		st2 := s.start(engine.StartRequest{Provider: "microsoft", Transport: states.Device, Account: "bob"})
		s.clk.Advance(12 * time.Second)
		s.close()
		s.clk.Advance(time.Minute)
		s.open()
		s.outcome(s.status(st2.ID), states.Expired, states.ExpiredWhileDown)
	}},
	{"token_refresh_rotated", "a connection refreshed twice with rotating refresh tokens, across a restart, then disconnected at a provider without a revocation endpoint", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "github"})
		s.clk.Advance(7 * time.Second)
		s.outcome(s.callback(st, s.authorize(st.AuthURL)), states.Complete, states.Exchanged)
		s.clk.Advance(61 * time.Minute)
		s.token("github")
		s.restart()
		s.clk.Advance(2 * time.Hour)
		s.token("github")
		res, err := s.eng.Disconnect(s.ctx, engine.TokenKey{Provider: "github"})
		require.NoError(s.t, err)
		assert.Equal(s.t, states.RevocationUnsupported, res.Revocation)
		s.tokenStored("github", "", false)
	}},
	{"token_refresh_failed", "a refresh that fails transiently (HTTP 503), one rejected with invalid_grant (needs_reconnect), then a disconnect revoked at the provider (RFC 7009)", func(s *session) {
		s.open()
		st := s.start(engine.StartRequest{Provider: "google", Account: "alice@example.com"})
		s.clk.Advance(11 * time.Second)
		s.outcome(s.callback(st, s.authorize(st.AuthURL)), states.Complete, states.Exchanged)
		key := engine.TokenKey{Provider: "google", Account: "alice@example.com"}
		s.clk.Advance(2 * time.Hour)
		s.prov.SetOverride(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
		_, _, err := s.eng.Token(s.ctx, key)
		var re *engine.RefreshError
		require.ErrorAs(s.t, err, &re)
		assert.True(s.t, re.Transient)
		s.clk.Advance(5 * time.Minute)
		s.prov.Refuse("invalid_grant", "Token has been expired or revoked.")
		_, _, err = s.eng.Token(s.ctx, key)
		require.ErrorAs(s.t, err, &re)
		assert.True(s.t, re.NeedsReconnect())
		cs, err := s.eng.Connections(s.ctx)
		require.NoError(s.t, err)
		require.Len(s.t, cs, 1)
		assert.Equal(s.t, states.NeedsReconnect, cs[0].Health)
		s.prov.SetOverride(nil)
		s.clk.Advance(time.Minute)
		res, err := s.eng.Disconnect(s.ctx, key)
		require.NoError(s.t, err)
		assert.Equal(s.t, states.RevocationDone, res.Revocation)
		s.tokenStored("google", "alice@example.com", false)
	}},
}

// token gets provider's token, refreshing it when due.
func (s *session) token(provider string) {
	s.t.Helper()
	_, _, err := s.eng.Token(s.ctx, engine.TokenKey{Provider: provider})
	require.NoError(s.t, err, "token for %s", provider)
}

// happySteps are the steps of a loopback connect, as restart_every_step
// interleaves restarts with them.
func happySteps() []func(s *session) {
	var code string
	return []func(s *session){
		func(s *session) { s.start(engine.StartRequest{Provider: "github"}) },
		func(s *session) {
			// The user is at the provider for a while.
			s.clk.Advance(18 * time.Second)
			code = s.authorize(s.last.AuthURL)
		},
		func(s *session) {
			f := s.callback(s.last, code)
			s.outcome(f, states.Complete, states.Exchanged)
			assert.Equal(s.t, []string{"repo", "read:user"}, f.GrantedScopes)
		},
		func(s *session) {
			s.clk.Advance(5 * time.Second)
			s.outcome(s.status(s.last.ID), states.Complete, states.Exchanged)
			s.tokenStored("github", "", true)
		},
	}
}

// outcomeOf is a flow without its id and times.
func outcomeOf(f states.Flow) states.Flow {
	f.ID, f.Created, f.Deadline, f.Ended = "", time.Time{}, time.Time{}, time.Time{}
	if f.Conn != nil {
		c := *f.Conn
		c.Flow, c.Connected, c.TokenExpiry, c.RefreshFP = "", time.Time{}, time.Time{}, ""
		f.Conn = &c
	}
	return f
}

func events(h []states.Record) []states.Event {
	out := make([]states.Event, len(h))
	for i, r := range h {
		out[i] = r.Event
	}
	return out
}

// session is one recording: an engine on a bbolt log in a temporary
// directory, a fake clock, a seeded random source and a fake provider.
type session struct {
	t    *testing.T
	ctx  context.Context
	clk  *fakeclock.Clock
	prov *oauthtest.Server
	// dev is the device-flow provider: no latency, since its polls run
	// inside the fake clock's Advance.
	dev  *oauthtest.Server
	cfg  engine.Config
	path string
	db   *persist.DB
	eng  *engine.Engine
	// last is the flow the last start began.
	last engine.Started
	// snap, when set, is the export taken mid-run (live_at_export).
	snap []byte
}

func newSession(t *testing.T, name string) *session {
	t.Helper()
	s := &session{t: t, ctx: context.Background(), clk: fakeclock.New(recEpoch),
		path: filepath.Join(t.TempDir(), "flowd.db")}
	s.prov = newRecProvider(t, s.clk)
	s.dev = oauthtest.New(t, oauthtest.Options{ClientID: recClientID, ClientSecret: recClientSecret, Now: s.clk.Now,
		VerificationURI: "https://microsoft.example.test/devicelogin"})
	device := recProviderConfig(s.dev, "microsoft", "openid", "offline_access")
	device.DeviceAuthURL = s.dev.DeviceAuthURL
	s.cfg = engine.Config{
		Clock: s.clk,
		// Seeded by the scenario's name: the same state tokens, PKCE
		// verifiers and fingerprint key every run, distinct across scenarios.
		Rand: newSeeded(name),
		Providers: []engine.Provider{
			recProviderConfig(s.prov, "github", "repo", "read:user"),
			withRevocation(recProviderConfig(s.prov, "google", "openid", "email"), s.prov),
			device,
		},
		PublicBaseURL:   recPublicBase,
		ExchangeTimeout: 10 * time.Second,
		// Keep every record: pruning would arm an hourly timer that the
		// long clock jumps of some scenarios would fire.
		Retention: -1,
	}
	t.Cleanup(func() {
		if s.eng != nil {
			s.close()
		}
	})
	return s
}

func (s *session) open() {
	s.t.Helper()
	// NoSync: what is written does not depend on it, and the recordings
	// run on every `go test`.
	db, err := persist.Open(s.path, persist.Options{NoSync: true})
	require.NoError(s.t, err, "open the event log")
	cfg := s.cfg
	cfg.Log = db
	eng, err := engine.Open(s.ctx, cfg)
	if err != nil {
		_ = db.Close()
	}
	require.NoError(s.t, err, "open the engine")
	s.db, s.eng = db, eng
}

// close stops flowd cleanly: the engine, then its log.
func (s *session) close() {
	s.t.Helper()
	require.NoError(s.t, s.eng.Close(), "close the engine")
	require.NoError(s.t, s.db.Close(), "close the event log")
	s.eng, s.db = nil, nil
}

// restart is a clean restart with recDowntime between.
func (s *session) restart() {
	s.t.Helper()
	s.close()
	s.clk.Advance(recDowntime)
	s.open()
}

// crash drops the database handle under a running engine, as the death of
// the process would: the engine is returned for the caller to dispose of
// once its in-flight calls have failed.
func (s *session) crash() *engine.Engine {
	s.t.Helper()
	require.NoError(s.t, s.db.Close())
	e := s.eng
	s.eng, s.db = nil, nil
	return e
}

func (s *session) start(req engine.StartRequest) engine.Started {
	s.t.Helper()
	st, err := s.eng.Start(s.ctx, req)
	require.NoError(s.t, err)
	s.last = st
	return st
}

func (s *session) callback(st engine.Started, code string) states.Flow {
	s.t.Helper()
	f, err := s.eng.Callback(s.ctx, engine.CallbackParams{State: st.ID, Code: code})
	require.NoError(s.t, err)
	return f
}

type callbackResult struct {
	flow states.Flow
	err  error
}

// callbackAsync delivers a callback from another goroutine, for exchanges
// the fake provider holds.
func (s *session) callbackAsync(st engine.Started, code string) <-chan callbackResult {
	done := make(chan callbackResult, 1)
	eng := s.eng
	go func() {
		f, err := eng.Callback(context.Background(), engine.CallbackParams{State: st.ID, Code: code})
		done <- callbackResult{f, err}
	}()
	return done
}

func (s *session) status(state string) states.Flow {
	s.t.Helper()
	f, err := s.eng.Status(s.ctx, state)
	require.NoError(s.t, err)
	return f
}

func (s *session) history(state string) []states.Record {
	s.t.Helper()
	h, err := s.eng.History(s.ctx, state)
	require.NoError(s.t, err)
	return h
}

func (s *session) outcome(f states.Flow, st states.State, reason states.Reason) {
	s.t.Helper()
	require.Equal(s.t, st, f.State, "flow %+v", f)
	require.Equal(s.t, reason, f.Reason, "flow %+v", f)
	assert.Equal(s.t, reason == states.Exchanged, f.TokenStored)
}

// tokenStored asserts whether the engine hands out a token for the
// provider and account.
func (s *session) tokenStored(provider, account string, want bool) {
	s.t.Helper()
	_, _, err := s.eng.Token(s.ctx, engine.TokenKey{Provider: provider, Account: account})
	if want {
		require.NoError(s.t, err, "a token is stored for %s", provider)
	} else {
		require.ErrorIs(s.t, err, engine.ErrNoToken, "no token is stored for %s", provider)
	}
}

// export is the engine's own export of the whole log, as `flowctl log
// export` writes it.
func (s *session) export() []byte {
	s.t.Helper()
	var b bytes.Buffer
	err := s.eng.Export(s.ctx, engine.ExportQuery{}, func(r states.Record) error {
		line, err := r.Encode()
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
		return nil
	})
	require.NoError(s.t, err, "export the log")
	return b.Bytes()
}

// snapshot takes the recording's export now rather than at the end.
func (s *session) snapshot() { s.snap = s.export() }

// runRecording runs a scenario and returns the engine's export.
func runRecording(t *testing.T, r recording) []byte {
	t.Helper()
	s := newSession(t, r.name)
	r.run(s)
	out := s.snap
	if out == nil {
		out = s.export()
	}
	require.NotEmpty(t, out)
	for _, secret := range s.prov.Secrets() {
		require.NotContains(t, string(out), secret, "a secret reached the export")
	}
	return out
}

// TestRecordings runs every scenario through the engine and requires its
// export to be the checked-in recording, byte for byte; with -record it
// writes the recording and its .golden instead. (TestGolden replays the
// checked-in files.)
func TestRecordings(t *testing.T) {
	if *record {
		require.NoError(t, os.MkdirAll(recordDir, 0o755))
	}
	for _, r := range recordings {
		t.Run(r.name, func(t *testing.T) {
			got := runRecording(t, r)
			path := filepath.Join(recordDir, r.name+".jsonl")
			if *record {
				writeRecording(t, path, got)
				return
			}
			want, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("no recording %s yet: run `go test ./replay -run TestRecordings -record`, read it and its .golden, commit both", path)
			}
			require.NoError(t, err)
			require.Equal(t, string(want), string(got),
				"the engine no longer writes what %s recorded (%s). If the change is intended, run `go test ./replay -run TestRecordings -record` and review the diff", path, r.what)
		})
	}
}

// writeRecording writes a recording and its .golden. It refuses to
// overwrite a recording of an older schema version: that one must stay
// and keep replaying (see testdata/replay/README.md).
func writeRecording(t *testing.T, path string, log []byte) {
	t.Helper()
	if old, err := os.ReadFile(path); err == nil {
		if v := firstVersion(old); v != states.SchemaVersion {
			t.Fatalf("%s holds schema version %d records and this flowd writes version %d: keep the old recording, "+
				"`git mv testdata/replay/engine testdata/replay/v%d-engine`, then record again", path, v, states.SchemaVersion, v)
		}
	}
	var out bytes.Buffer
	_, err := Run(bytes.NewReader(log), &out)
	require.NoError(t, err, "the engine's own export does not replay")
	require.NoError(t, os.WriteFile(path, log, 0o644))
	require.NoError(t, os.WriteFile(strings.TrimSuffix(path, ".jsonl")+".golden", out.Bytes(), 0o644))
	t.Logf("recorded %s", path)
}

// firstVersion is the schema version of a log's first record, or 0.
func firstVersion(log []byte) int {
	line, _, _ := bytes.Cut(log, []byte("\n"))
	var head struct {
		V int `json:"v"`
	}
	_ = json.Unmarshal(line, &head)
	return head.V
}

// Every recording in testdata/replay/engine comes from a scenario here, so
// a scenario cannot be renamed or dropped leaving a recording nobody
// re-checks.
func TestRecordingsHaveScenarios(t *testing.T) {
	known := map[string]bool{}
	for _, r := range recordings {
		require.False(t, known[r.name], "two scenarios named %s", r.name)
		known[r.name] = true
	}
	files, err := filepath.Glob(filepath.Join(recordDir, "*.jsonl"))
	require.NoError(t, err)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".jsonl")
		assert.True(t, known[name], "%s has no scenario in replay/record_test.go", f)
	}
}

// seeded is a deterministic random source for the engine, safe for
// concurrent use.
type seeded struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func newSeeded(name string) io.Reader {
	return &seeded{r: rand.NewChaCha8(sha256.Sum256([]byte("flowd recording " + name)))}
}

func (s *seeded) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Read(p)
}

// newRecProvider is the provider's side of a recording: it issues codes
// for authorization URLs, and its token endpoint checks client
// credentials, PKCE and the redirect URI, redeems each code once, and
// takes recLatency on the fake clock to answer.
func newRecProvider(t *testing.T, clk *fakeclock.Clock) *oauthtest.Server {
	return oauthtest.New(t, oauthtest.Options{ClientID: recClientID, ClientSecret: recClientSecret,
		Latency: func() { clk.Advance(recLatency) }})
}

// withRevocation gives p the fake provider's RFC 7009 revocation endpoint.
func withRevocation(p engine.Provider, prov *oauthtest.Server) engine.Provider {
	p.RevocationURL = prov.URL + oauthtest.RevokePath
	return p
}

// recIssuer is the issuer the idp provider of the recordings names: fixed,
// not the fake server's URL, whose port changes every run.
const recIssuer = "https://idp.example.test"

// recProviderConfig is p as the engine's provider name, at an
// authorization URL of its own, asking for scopes by default.
func recProviderConfig(p *oauthtest.Server, name string, scopes ...string) engine.Provider {
	return engine.Provider{
		Name: name, AuthURL: "https://" + name + ".example.test/authorize", TokenURL: p.URL + "/" + name + "/token",
		AuthMethod: engine.AuthMethod(p.AuthMethod), ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: scopes,
	}
}

// authorize plays the user approving at the provider, and returns the code
// the provider redirects back with.
func (s *session) authorize(authURL string) string {
	s.t.Helper()
	_, code := s.prov.Authorize(s.t, authURL)
	return code
}

// The version guard of -record reads the version a recording was written with.
func TestFirstVersion(t *testing.T) {
	log, err := os.ReadFile(filepath.Join(recordDir, "canceled.jsonl"))
	require.NoError(t, err)
	assert.Equal(t, states.SchemaVersion, firstVersion(log))
	assert.Equal(t, 2, firstVersion([]byte(`{"v":2,"seq":1}`+"\n")))
	assert.Zero(t, firstVersion([]byte("garbage\n")))
}

func queryOf(t *testing.T, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Query()
}
