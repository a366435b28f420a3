package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/version"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

func TestStatus(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("live0123456789abcdef", "github", states.Loopback, 5*time.Minute)
	f.addFlow("dead0123456789abcdef", "google", states.Gateway, 5*time.Minute)
	f.finish("dead0123456789abcdef", states.ProviderDenied, states.Data{ErrorCode: "access_denied", Message: "no thanks"})

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", "live0123456789abcdef"))
	out := c.stdout.String()
	assert.Regexp(t, `state:\s+live0123456789abcdef\n`, out)
	assert.Regexp(t, `status:\s+awaiting_callback\n`, out)
	assert.Regexp(t, `deadline:\s+.*\(\dm\d\ds left\)`, out)

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "status", "dead0123456789abcdef"), "a flow that ended in error exits 1")
	out = c.stdout.String()
	assert.Regexp(t, `reason:\s+provider_denied: the provider denied the request`, out)
	assert.Regexp(t, `provider error:\s+access_denied`, out)
	assert.Regexp(t, `message:\s+no thanks`, out)

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", "live0123456789abcdef", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "awaiting_callback", m["status"])
	assert.Equal(t, false, m["terminal"])

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "status", "nosuchflow"))
	assert.Contains(t, c.stderr.String(), "no flow has this state; list flows with: flowctl list")
}

func TestStatusWaitLongPolls(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("waitme0123456789", "github", states.Loopback, 5*time.Minute)
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.finish("waitme0123456789", states.Exchanged, states.Data{})
	}()
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", "waitme", "--wait", "1m", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "complete", m["status"], "the long poll returned once the flow ended")
	f.mu.Lock()
	qs := f.statusQs
	f.mu.Unlock()
	assert.Contains(t, qs, "wait=2s", "polls are capped at the poll length")

	// The wait runs out with the flow still live: its status, exit 0.
	f.addFlow("stays0123456789", "github", states.Loopback, 5*time.Minute)
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", "stays0123456789", "--wait", "100ms", "--json"))
	assert.Equal(t, "awaiting_callback", oneJSON(t, c.stdout.String())["status"])
}

func TestPrefixAndCallbackURLName(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("abc111aaaaaaaaaaaaaa", "github", states.Loopback, 5*time.Minute)
	f.addFlow("abc222bbbbbbbbbbbbbb", "google", states.Loopback, 5*time.Minute)
	f.addFlow("xyz333cccccccccccccc", "github", states.Loopback, 5*time.Minute)

	for _, arg := range []string{
		"abc1",
		"xyz333cccccccccccccc",
		"http://127.0.0.1:8085/oauth/callback?code=SECRETCODE&state=xyz333cccccccccccccc",
		"?state=abc222bbbbbbbbbbbbbb&code=c",
	} {
		t.Run(arg, func(t *testing.T) {
			c := newCLI("")
			require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "status", arg, "--json"), c.stderr.String())
			st := oneJSON(t, c.stdout.String())["state"].(string)
			assert.True(t, strings.HasPrefix(st, "abc1") || strings.HasPrefix(st, "xyz") || strings.HasPrefix(st, "abc2"))
			assert.NotContains(t, c.stdout.String()+c.stderr.String(), "SECRETCODE", "the pasted code is never echoed")
		})
	}

	c := newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "inspect", "abc"))
	errOut := c.stderr.String()
	assert.Contains(t, errOut, `prefix "abc" matches 2 flows; give more of the state:`)
	assert.Contains(t, errOut, "abc111aaaaaaaaaaaaaa")
	assert.Contains(t, errOut, "abc222bbbbbbbbbbbbbb")
	assert.NotContains(t, errOut, "xyz333")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "cancel", "nope"))
	assert.Contains(t, c.stderr.String(), "no flow has this state", "no match: flowd's own message")

	c = newCLI("")
	require.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "inspect", "http://127.0.0.1:8085/oauth/callback?code=x"))
	assert.Contains(t, c.stderr.String(), "that URL has no state parameter")
}

func TestWait(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("wait0123456789", "github", states.Loopback, 5*time.Minute)
	go func() {
		time.Sleep(80 * time.Millisecond)
		f.finish("wait0123456789", states.Exchanged, states.Data{GrantedScopes: []string{"repo"}})
	}()
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "wait", "wait01"))
	assert.Contains(t, c.stdout.String(), "Connected github. Granted scopes: repo.")

	f.addFlow("gone0123456789", "github", states.Loopback, 5*time.Minute)
	f.finish("gone0123456789", states.Superseded, states.Data{SupersededBy: "wait0123456789"})
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "wait", "gone0123456789", "--json"))
	assert.Equal(t, "superseded", oneJSON(t, c.stdout.String())["reason"])

	// Ctrl+C stops waiting but leaves the flow alone.
	f.addFlow("keep0123456789", "github", states.Loopback, 5*time.Minute)
	ctx, interrupt := context.WithCancel(testCtx(t))
	time.AfterFunc(80*time.Millisecond, interrupt)
	c = newCLI("")
	c.d.isTerminal = func(io.Writer) bool { return true }
	require.Equal(t, ExitInterrupted, c.run(ctx, f.socket, "wait", "keep0123456789"))
	// The live line says what Ctrl+C does here: wait does not cancel.
	assert.Regexp(t, regexp.MustCompile(`Waiting for flow keep01234567: \dm\d\ds left \(Ctrl\+C stops waiting\)`), c.stdout.String())
	assert.NotContains(t, c.stdout.String(), "Ctrl+C cancels")
	assert.Contains(t, c.stderr.String(), "stopped waiting; the flow goes on in flowd (re-attach: flowctl wait keep0123456789)")
	_, cancels, _ := f.snapshot()
	assert.Empty(t, cancels)
	assert.Equal(t, "awaiting_callback", f.flow("keep0123456789").Status)
}

func TestWaitRidesOutAFlowdRestart(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("restart0123456789", "github", states.Loopback, 5*time.Minute)
	// flowd is down when wait starts: it exits 3 at once rather than
	// waiting for a daemon that may never come.
	f.srv.Close()
	type res struct {
		code int
		c    *cli
	}
	done := make(chan res, 1)
	c := newCLI("")
	go func() { done <- res{c.run(testCtx(t), f.socket, "wait", "restart0123456789"), c} }()
	r := <-done
	assert.Equal(t, ExitUnreachable, r.code)

	// Now flowd is up when wait starts, and goes away mid-wait.
	g := newFakeFlowd(t)
	g.addFlow("restart0123456789", "github", states.Loopback, 5*time.Minute)
	c2 := newCLI("")
	go func() { done <- res{c2.run(testCtx(t), g.socket, "wait", "restart0123456789"), c2} }()
	time.Sleep(100 * time.Millisecond)
	// Listener first: a connection accepted after the others were closed
	// would otherwise keep serving the long polls.
	g.srv.Listener.Close()
	g.srv.CloseClientConnections()
	if !assert.Eventually(t, func() bool { return strings.Contains(c2.stderr.String(), "Lost flowd") }, 10*time.Second, 10*time.Millisecond, "stdout: %s\nstderr: %s", c2.stdout, c2.stderr) {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.FailNow()
	}
	// flowd comes back on the same socket with the flow finished.
	os.Remove(g.socket)
	h := restartFake(t, g)
	h.finish("restart0123456789", states.Exchanged, states.Data{})
	r = <-done
	assert.Equal(t, ExitOK, r.code, "stderr: %s", c2.stderr.String())
	assert.Contains(t, c2.stderr.String(), "flowd is back.")
	assert.Contains(t, c2.stdout.String(), "Connected github.")
}

func TestCancel(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("cancel0123456789", "github", states.Loopback, 5*time.Minute)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "cancel", "cancel01"))
	assert.Equal(t, "Canceled flow cancel0123456789 (github).\n", c.stdout.String())
	assert.Equal(t, "canceled", f.flow("cancel0123456789").Reason)

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "cancel", "cancel0123456789", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, wire.CodeFlowFinished, m["error"].(map[string]any)["code"])
	assert.Contains(t, c.stderr.String(), "flow has already ended; start a new one with: flowctl connect github")
}

func TestList(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "list"))
	assert.Equal(t, "No flows.\n", c.stdout.String())
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "list", "--json"))
	assert.JSONEq(t, `{"flows":[]}`, c.stdout.String())

	f.addFlow("first0123456789abc", "github", states.Loopback, 5*time.Minute)
	f.addFlow("second0123456789ab", "google", states.Manual, 5*time.Minute)
	f.finish("first0123456789abc", states.Exchanged, states.Data{})

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "list"))
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	require.Len(t, lines, 3)
	assert.Regexp(t, `^STATE\s+PROVIDER\s+STATUS\s+REASON\s+TRANSPORT\s+CREATED\s+DEADLINE / ENDED$`, lines[0])
	assert.Regexp(t, `^second012345\s+google\s+awaiting_callback\s+-\s+manual\s+\d+s ago\s+in 4m$`, lines[1])
	assert.Regexp(t, `^first0123456\s+github\s+complete\s+exchanged\s+loopback\s+\d+s ago\s+\d+s ago$`, lines[2])
	// Columns line up: every row's PROVIDER starts where the header's does.
	col := strings.Index(lines[0], "PROVIDER")
	for _, l := range lines[1:] {
		assert.NotEqual(t, byte(' '), l[col], l)
		assert.Equal(t, byte(' '), l[col-1], l)
	}

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "list", "--status", "awaiting_callback,pending", "--provider", "google", "--json"))
	var lr wire.ListResponse
	require.NoError(t, json.Unmarshal([]byte(c.stdout.String()), &lr))
	require.Len(t, lr.Flows, 1)
	assert.Equal(t, "second0123456789ab", lr.Flows[0].State)
	f.mu.Lock()
	last := f.lists[len(f.lists)-1]
	f.mu.Unlock()
	assert.Equal(t, "provider=google&status=awaiting_callback%2Cpending", last)
}

func TestTokenDisconnectProviders(t *testing.T) {
	f := newFakeFlowd(t)
	f.tokens["github"] = wire.TokenResponse{Provider: "github", AccessToken: "gho_abc", TokenType: "bearer", Scopes: []string{"repo"}}

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "token", "github"))
	assert.Equal(t, "gho_abc\n", c.stdout.String(), "only the token, for $(...)")
	assert.Empty(t, c.stderr.String())

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "token", "github", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "gho_abc", m["access_token"])
	assert.NotContains(t, m, "refresh_token")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "token", "google"))
	assert.Contains(t, c.stderr.String(), "connect first: flowctl connect")
	assert.Empty(t, c.stdout.String())

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "disconnect", "github"))
	assert.Equal(t, "Disconnected github: flowd no longer holds a token for it.\n", c.stdout.String())
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "disconnect", "github", "--json"))
	assert.JSONEq(t, `{"provider":"github","removed":true}`, c.stdout.String())
	assert.Equal(t, []string{"github", "github"}, f.removed)

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "providers"))
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	require.Len(t, lines, 3)
	assert.Regexp(t, `^NAME\s+STATUS\s+PRESET\s+CLIENT ID\s+SCOPES\s+TOKEN AUTH\s+ISS\s+DEVICE\s+AUTH URL$`, lines[0])
	assert.Regexp(t, `^github\s+available\s+github\s+Iv1\.abc\s+repo,read:user\s+client_secret_post \(preset\)\s+-\s+no\s+https://github\.com/login/oauth/authorize$`, lines[1])
	assert.Regexp(t, `^google\s+available\s+google\s+123\.apps\s+openid,email\s+client_secret_post \(preset\)\s+required\s+no\s+https://accounts`, lines[2])

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "providers", "--json"))
	var pr wire.ProvidersResponse
	require.NoError(t, json.Unmarshal([]byte(c.stdout.String()), &pr))
	assert.Len(t, pr.Providers, 2)
	oneJSON(t, c.stdout.String())
}

// An issuer_mismatch flow is shown as what it is: the reason, the iss that
// arrived and the one expected, and no exchange.
func TestInspectShowsIssuerMismatch(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("issm0123456789abcdef", "idp", states.Loopback, 5*time.Minute)
	f.mu.Lock()
	created := &f.history["issm0123456789abcdef"][0].Data // inspect folds the history
	created.Issuer, created.IssuerRequired = "https://idp.example", true
	f.mu.Unlock()
	f.finish("issm0123456789abcdef", states.IssuerMismatch, states.Data{
		Message: `the redirect's iss is "https://evil.example", not the expected issuer https://idp.example (RFC 9207): it may come from another authorization server; the code was not sent to the token endpoint`})
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "inspect", "issm"), c.stderr.String())
	out := c.stdout.String()
	assert.Regexp(t, `created\s+\(new\) -> pending\s+.*issuer=https://idp.example issuer_required=true`, out)
	assert.Regexp(t, `failed\s+awaiting_callback -> error\s+reason=issuer_mismatch message=`, out)
	assert.NotContains(t, out, "exchange_started")
	assert.Regexp(t, `reason:\s+issuer_mismatch: the redirect did not come from the expected authorization server`, out)
	assert.Contains(t, out, `"https://evil.example", not the expected issuer https://idp.example`)
	assert.Regexp(t, `issuer:\s+https://idp.example \(iss required\)`, out)
}

func TestInspectThroughFlowd(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("insp0123456789abcdef", "github", states.Loopback, 5*time.Minute)
	f.finish("insp0123456789abcdef", states.ExchangeFailed, states.Data{ErrorCode: "invalid_grant", HTTPStatus: 400, Message: "bad verifier"})

	c := newCLI("")
	url := "http://127.0.0.1:8085/oauth/callback?code=THECODE&state=insp0123456789abcdef"
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "inspect", url), c.stderr.String())
	out := c.stdout.String()
	lines := strings.Split(out, "\n")
	assert.Regexp(t, `^TIME\s+SINCE PREV\s+EVENT\s+FROM -> TO\s+DATA$`, lines[0])
	assert.Regexp(t, `^\S+Z\s+-\s+created\s+\(new\) -> pending\s+provider=github .*transport=loopback redirect_uri=http://127.0.0.1:8085/oauth/callback deadline=`, lines[1])
	assert.Regexp(t, `^\S+Z\s+\+\S+\s+url_issued\s+pending -> awaiting_callback`, lines[2])
	assert.Regexp(t, `^\S+Z\s+\+\S+\s+exchange_started\s+awaiting_callback -> awaiting_callback\s+code_fp=fp:1a2b`, lines[3])
	assert.Regexp(t, `^\S+Z\s+\+\S+\s+failed\s+awaiting_callback -> error\s+reason=exchange_failed message="bad verifier" error_code=invalid_grant http_status=400`, lines[4])
	assert.Regexp(t, `status:\s+error`, out)
	assert.Regexp(t, `reason:\s+exchange_failed: the provider refused`, out)
	assert.Regexp(t, `deadline:\s+\d{4}-`, out)
	assert.NotContains(t, out, "THECODE")

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "inspect", "insp", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "insp0123456789abcdef", m["state"])
	assert.Equal(t, "flowd", m["source"])
	assert.Len(t, m["records"], 4)
	assert.Equal(t, "error", m["flow"].(map[string]any)["status"])
	assert.NotContains(t, m, "time_left", "a finished flow has no time left")

	// A live flow shows its time left.
	f.addFlow("live0123456789abcdef", "github", states.Loopback, 5*time.Minute)
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "inspect", "live", "--json"))
	assert.Regexp(t, `^4m5\ds$|^5m0s$`, oneJSON(t, c.stdout.String())["time_left"])
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "inspect", "live"))
	assert.Regexp(t, `deadline:\s+.*\(\dm\d\ds left\)`, c.stdout.String())
}

func TestInspectDB(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flowd.db")
	db, err := persist.Open(path, persist.Options{})
	require.NoError(t, err)
	deadline := time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC)
	t0 := deadline.Add(-5 * time.Minute)
	for _, id := range []string{"dbflowAAAA111", "dbflowAAAA222", "otherflow333"} {
		recs := []states.Record{
			{Version: 1, Flow: id, FlowSeq: 1, Event: states.Created, To: states.Pending, Time: t0,
				Data: states.Data{Provider: "github", Transport: states.Loopback, Deadline: &deadline}},
			{Version: 1, Flow: id, FlowSeq: 2, Event: states.URLIssued, From: states.Pending, To: states.AwaitingCallback, Time: t0.Add(time.Millisecond)},
		}
		require.NoError(t, db.Append(context.Background(), recs, nil))
	}

	t.Run("flowd holds the file", func(t *testing.T) {
		c := newCLI("")
		start := time.Now()
		require.Equal(t, ExitFailed, c.run(testCtx(t), "", "inspect", "dbflowAAAA111", "--db", path))
		assert.Equal(t, "flowd is running and holds "+path+", so it cannot be read directly: drop --db and flowctl asks flowd instead\n", c.stderr.String())
		assert.Less(t, time.Since(start), 5*time.Second, "it says so at once, not after a long lock wait")
	})
	require.NoError(t, db.Close())

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "inspect", "other", "--db", path), c.stderr.String())
	assert.Contains(t, c.stdout.String(), "url_issued")
	assert.Regexp(t, `status:\s+awaiting_callback`, c.stdout.String())
	assert.Regexp(t, `deadline:\s+2026-03-01 .*\(passed\)`, c.stdout.String())

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "inspect", "dbflowAAAA222", "--db", path, "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "db:"+path, m["source"])
	assert.Equal(t, "dbflowAAAA222", m["state"])

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "inspect", "dbflow", "--db", path))
	assert.Contains(t, c.stderr.String(), `prefix "dbflow" matches 2 flows`)

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "inspect", "zzz", "--db", path))
	assert.Contains(t, c.stderr.String(), `no flow in `+path+` has state "zzz"`)

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "inspect", "zzz", "--db", filepath.Join(dir, "missing.db")))
	assert.Contains(t, c.stderr.String(), "no such file")
	_, err = os.Stat(filepath.Join(dir, "missing.db"))
	assert.ErrorIs(t, err, os.ErrNotExist, "read-only never creates a file")
}

func TestLogExport(t *testing.T) {
	f := newFakeFlowd(t)
	// Interleave two flows so global order differs from per-flow order.
	f.addFlow("expA0123456789", "github", states.Loopback, 5*time.Minute)
	f.addFlow("expB0123456789", "google", states.Loopback, 5*time.Minute)
	f.finish("expA0123456789", states.Exchanged, states.Data{})

	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "log", "export"))
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	require.Len(t, lines, 6)
	var last uint64
	for _, l := range lines {
		rec, err := states.Decode([]byte(l))
		require.NoError(t, err, "every line is a record in the documented schema")
		assert.Greater(t, rec.Seq, last, "global order")
		last = rec.Seq
	}

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "log", "export", "--flow", "expB"))
	lines = strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	require.Len(t, lines, 2)
	for _, l := range lines {
		assert.Contains(t, l, `"flow":"expB0123456789"`)
	}

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "log", "export", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	assert.Empty(t, c.stdout.String(), "nothing after a future time")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "log", "export", "--since", "1h", "--json"))
	assert.Len(t, strings.Split(strings.TrimSpace(c.stdout.String()), "\n"), 6)

	// The export replays.
	c2 := newCLI(c.stdout.String())
	require.Equal(t, ExitOK, c2.run(testCtx(t), "", "replay", "-"), c2.stderr.String())
	assert.Contains(t, c2.stdout.String(), "6 records, 2 flows")
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	got, err := parseSince("2h", now)
	require.NoError(t, err)
	assert.Equal(t, now.Add(-2*time.Hour), got)
	got, err = parseSince("2026-02-28T10:00:00Z", now)
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 2, 28, 10, 0, 0, 0, time.UTC), got)
	_, err = parseSince("-2h", now)
	assert.Error(t, err)
}

func TestReplay(t *testing.T) {
	good := filepath.Join("..", "..", "testdata", "replay", "canceled.jsonl")
	if _, err := os.Stat(good); err != nil {
		t.Skipf("no recorded log at %s yet (the replay corpus is another package's): %v", good, err)
	}
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "replay", good))
	assert.Contains(t, c.stdout.String(), "now: error (canceled)")

	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "replay", good, "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.EqualValues(t, 3, m["records"])
	assert.NotContains(t, m, "error")

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	ls := strings.SplitAfter(string(data), "\n")
	require.GreaterOrEqual(t, len(ls), 2)
	require.NoError(t, os.WriteFile(bad, []byte(ls[0]+ls[0]), 0o600))
	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "replay", bad))
	assert.Contains(t, c.stderr.String(), "line 2:")

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "replay", bad, "--json"))
	m = oneJSON(t, c.stdout.String())
	assert.EqualValues(t, 2, m["error"].(map[string]any)["line"])

	c = newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), "", "replay", filepath.Join(dir, "missing.jsonl")))
	assert.Contains(t, c.stderr.String(), "no such file")
}

func TestGraph(t *testing.T) {
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "graph"))
	assert.Equal(t, states.Mermaid(), c.stdout.String())
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "graph", "--format", "dot"))
	assert.Equal(t, states.DOT(), c.stdout.String())
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "graph", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "mermaid", m["format"])
	assert.Equal(t, states.Mermaid(), m["graph"])
}

// --version needs no flowd and names the build, as flowd -version does.
func TestVersionFlag(t *testing.T) {
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "--version"))
	out := strings.TrimSpace(c.stdout.String())
	assert.True(t, strings.HasPrefix(out, "flowctl "), out)
	assert.NotContains(t, out, "(devel)")
	assert.Equal(t, "flowctl "+version.String(), out)
}

// flowd keeps its socket in FLOWD_STATE_DIR when there is no
// XDG_RUNTIME_DIR; flowctl looks there with the same variable.
func TestSocketFollowsFlowdStateDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("FLOWD_SOCKET", "")
	c := newCLI("")
	c.env["FLOWD_STATE_DIR"] = "/srv/flowd-state"
	assert.Equal(t, ExitUnreachable, c.run(testCtx(t), "", "providers"))
	assert.Contains(t, c.stderr.String(), "/srv/flowd-state/flowd.sock")
}
