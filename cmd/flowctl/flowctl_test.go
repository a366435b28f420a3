package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnreachableExitsThreeWithTheExactSentence(t *testing.T) {
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "none.sock")
	want := fmt.Sprintf("could not reach flowd at %s: no such file or directory. Is flowd running? Start it with: flowd\n", sock)
	for _, args := range [][]string{
		{"connect", "github"},
		{"status", "abc"},
		{"wait", "abc"},
		{"cancel", "abc"},
		{"list"},
		{"token", "github"},
		{"disconnect", "github"},
		{"providers"},
		{"inspect", "abc"},
		{"log", "export"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			c := newCLI("")
			code := c.run(testCtx(t), sock, args...)
			assert.Equal(t, ExitUnreachable, code)
			assert.Equal(t, want, c.stderr.String())
			assert.Empty(t, c.stdout.String())
			assert.Empty(t, c.browser.urls(), "no browser without flowd")
		})
	}
	t.Run("json", func(t *testing.T) {
		c := newCLI("")
		code := c.run(testCtx(t), sock, "list", "--json")
		assert.Equal(t, ExitUnreachable, code)
		m := oneJSON(t, c.stdout.String())
		assert.Equal(t, "unreachable", m["error"].(map[string]any)["code"])
		assert.Equal(t, want, c.stderr.String())
	})
	t.Run("refused", func(t *testing.T) {
		// A stale socket file with nobody listening.
		stale := filepath.Join(dir, "stale.sock")
		require.NoError(t, os.WriteFile(stale, nil, 0o600))
		c := newCLI("")
		assert.Equal(t, ExitUnreachable, c.run(testCtx(t), stale, "list"))
		assert.Contains(t, c.stderr.String(), "could not reach flowd at "+stale+": connection refused. Is flowd running?")
	})
}

func TestSocketComesFromFlagThenEnv(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	c.env[wire.SocketEnv] = f.socket
	assert.Equal(t, ExitOK, c.run(testCtx(t), "", "providers"))
	assert.Contains(t, c.stdout.String(), "github")

	c = newCLI("")
	c.env[wire.SocketEnv] = "/nonexistent/flowd.sock"
	assert.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "providers"), "--socket wins over the environment")
}

func TestUsageErrorsExitTwo(t *testing.T) {
	f := newFakeFlowd(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"list", "--nope"}, "unknown flag: --nope"},
		{[]string{"connect"}, "accepts 1 arg(s), received 0"},
		{[]string{"status", "a", "b"}, "accepts at most 1 arg(s), received 2"},
		{[]string{"connect", "github", "--transport", "carrier-pigeon"}, `unknown transport "carrier-pigeon"`},
		{[]string{"connect", "github", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"connect", "github", "--timeout", "soon"}, "invalid argument"},
		{[]string{"list", "--status", "done"}, `unknown status "done"`},
		{[]string{"graph", "--format", "png"}, `unknown format "png"`},
		{[]string{"log", "export", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"status", "--wait", "-1s", "x"}, "--wait must not be negative"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := newCLI("")
			assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, tc.args...))
			assert.Contains(t, c.stderr.String(), tc.want)
			assert.Empty(t, c.stdout.String())
		})
	}
	starts, _, _ := f.snapshot()
	assert.Empty(t, starts, "a bad command line starts no flow")

	c := newCLI("")
	assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "connect", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "usage", m["error"].(map[string]any)["code"])
}

func TestHelpShowsExamplesAndExitCodes(t *testing.T) {
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), "", "--help"))
	out := c.stdout.String()
	for _, s := range []string{"Exit codes:", "3    flowd unreachable", "130", "Examples:", "--json", "--socket"} {
		assert.Contains(t, out, s)
	}
	for _, sub := range [][]string{{"connect"}, {"status"}, {"wait"}, {"cancel"}, {"list"}, {"token"}, {"disconnect"}, {"providers"}, {"inspect"}, {"log", "export"}, {"replay"}, {"graph"}} {
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), "", append(sub, "--help")...), sub)
		assert.Contains(t, c.stdout.String(), "Examples:", sub)
		assert.Contains(t, c.stdout.String(), "--json", sub)
	}
}

func TestCompletionIsAvailable(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), "", "completion", sh), sh)
		assert.Contains(t, c.stdout.String(), "flowctl", sh)
	}
}

func TestConnectLoopbackOpensBrowserAndWaitsForCompletion(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	c.browser.onOpen = func(string) {
		// The user approves; flowd receives the redirect a moment later.
		go func() {
			time.Sleep(50 * time.Millisecond)
			f.mu.Lock()
			state := f.order[len(f.order)-1]
			f.mu.Unlock()
			f.finish(state, states.Exchanged, states.Data{GrantedScopes: []string{"repo", "read:user"}})
		}()
	}
	code := c.run(testCtx(t), f.socket, "connect", "github", "--scopes", "repo,read:user", "--timeout", "2m")
	require.Equal(t, ExitOK, code, c.stderr.String())
	starts, cancels, _ := f.snapshot()
	require.Len(t, starts, 1)
	assert.Equal(t, wire.StartRequest{Provider: "github", Scopes: []string{"repo", "read:user"}, Transport: "loopback", TTL: "2m0s"}, starts[0])
	assert.Empty(t, cancels)
	urls := c.browser.urls()
	require.Len(t, urls, 1)
	// The opener's argv is public: it gets the one-time launch link, never
	// the provider's URL with the state and PKCE challenge.
	assert.True(t, strings.HasPrefix(urls[0], "http://127.0.0.1:8085/oauth/launch?t=opaque-"), urls[0])
	assert.NotContains(t, urls[0], "provider.example")
	for _, st := range f.order {
		assert.NotContains(t, urls[0], st)
	}
	assert.Contains(t, c.stdout.String(), "Opened your browser")
	assert.Contains(t, c.stdout.String(), "only that browser can finish this sign-in")
	assert.Contains(t, c.stdout.String(), "Connected github. Granted scopes: repo, read:user.")
	assert.NotContains(t, c.stdout.String(), clearLine, "no live line when stdout is not a terminal")
}

func TestConnectPrintsURLWithoutDisplayOrOverSSH(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"no display":  {},
		"ssh":         {"DISPLAY": ":0", "SSH_CONNECTION": "10.0.0.1 5555 10.0.0.2 22"},
		"wayland ssh": {"WAYLAND_DISPLAY": "wayland-0", "SSH_CONNECTION": "x"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeFlowd(t)
			f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
			c := newCLI("")
			c.env = env
			require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github"), c.stderr.String())
			assert.Empty(t, c.browser.urls())
			assert.Contains(t, c.stdout.String(), "Open this URL in a browser to connect github:\n\n  https://provider.example/authorize?")
		})
	}
	t.Run("--no-browser", func(t *testing.T) {
		f := newFakeFlowd(t)
		f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--no-browser"))
		assert.Empty(t, c.browser.urls())
		assert.Contains(t, c.stdout.String(), "Open this URL")
		assert.Contains(t, c.stdout.String(), "This sign-in is not bound to a browser", "a hand-copied URL is said to be unbound")
	})
	t.Run("macOS has a display without DISPLAY", func(t *testing.T) {
		assert.True(t, hasDisplay("darwin", func(string) string { return "" }))
		assert.False(t, hasDisplay("linux", func(string) string { return "" }))
		assert.True(t, hasDisplay("linux", func(k string) string {
			if k == "WAYLAND_DISPLAY" {
				return "wayland-0"
			}
			return ""
		}))
	})
	t.Run("browser fails to open", func(t *testing.T) {
		f := newFakeFlowd(t)
		f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
		c := newCLI("")
		c.browser.err = fmt.Errorf("xdg-open: not found")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github"))
		assert.Contains(t, c.stdout.String(), "Could not open a browser (xdg-open: not found).")
		assert.Contains(t, c.stdout.String(), "Open this URL")
	})
}

func TestConnectJSONPrintsExactlyOneObject(t *testing.T) {
	f := newFakeFlowd(t)
	f.onStart = func(st wire.StartResponse) {
		time.Sleep(30 * time.Millisecond)
		f.finish(st.State, states.Exchanged, states.Data{GrantedScopes: []string{"repo"}})
	}
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--json"))
	m := oneJSON(t, c.stdout.String())
	assert.Equal(t, "complete", m["status"])
	assert.Equal(t, true, m["terminal"])
	assert.Equal(t, "github", m["provider"])
	assert.Contains(t, m["auth_url"], "https://provider.example/authorize")
	assert.Equal(t, []any{"repo"}, m["granted_scopes"])
	assert.Contains(t, c.stderr.String(), "Opened your browser", "progress goes to stderr with --json")
}

func TestConnectNoBrowserJSONReturnsAtOnce(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--no-browser", "--json", "--transport", "manual"))
	m := oneJSON(t, c.stdout.String())
	state, _ := m["state"].(string)
	require.NotEmpty(t, state)
	assert.Contains(t, m["auth_url"], "state="+state)
	assert.NotEmpty(t, m["expires_at"])
	assert.Equal(t, "manual", m["transport"])
	assert.Empty(t, c.stderr.String())
	assert.Empty(t, c.browser.urls())
	assert.Equal(t, "awaiting_callback", f.flow(state).Status, "the flow is left to the script")
}

func TestConnectFailuresExitOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason states.Reason
		data   states.Data
		want   []string
		status string
	}{
		{"denied", states.ProviderDenied, states.Data{ErrorCode: "access_denied", Message: "The user denied access"},
			[]string{"Connecting github failed: the provider denied the request (provider_denied).", "The provider said: access_denied: The user denied access"}, "error"},
		{"exchange failed", states.ExchangeFailed, states.Data{ErrorCode: "invalid_grant", HTTPStatus: 400},
			[]string{"(exchange_failed)", "The token endpoint answered HTTP 400."}, "error"},
		{"expired", states.DeadlineExpired, states.Data{}, []string{"no callback arrived before the deadline (expired)"}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFlowd(t)
			f.onStart = func(st wire.StartResponse) { f.finish(st.State, tc.reason, tc.data) }
			c := newCLI("")
			require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "connect", "github"))
			for _, w := range tc.want {
				assert.Contains(t, c.stderr.String(), w)
			}
			assert.Contains(t, c.stderr.String(), "flowctl inspect st")

			f.onStart = func(st wire.StartResponse) { f.finish(st.State, tc.reason, tc.data) }
			c = newCLI("")
			require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "connect", "github", "--json"))
			m := oneJSON(t, c.stdout.String())
			assert.Equal(t, tc.status, m["status"])
			assert.Equal(t, string(tc.reason), m["reason"])
		})
	}
	t.Run("unknown provider", func(t *testing.T) {
		f := newFakeFlowd(t)
		c := newCLI("")
		require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "connect", "gitlab"))
		assert.Contains(t, c.stderr.String(), `unknown provider "gitlab"; known providers: github, google`)
		assert.Empty(t, c.browser.urls())
	})
}

func TestConnectExpiresWhenFlowdSaysSo(t *testing.T) {
	// The flow's TTL passes; flowd expires it and the long poll returns.
	f := newFakeFlowd(t)
	f.onStart = func(st wire.StartResponse) {
		time.Sleep(time.Until(st.ExpiresAt))
		f.finish(st.State, states.DeadlineExpired, states.Data{})
	}
	c := newCLI("")
	require.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "connect", "github", "--timeout", "300ms"))
	assert.Contains(t, c.stderr.String(), "(expired)")
}

func TestConnectCtrlCCancelsTheFlowAndExits130(t *testing.T) {
	for _, jsonMode := range []bool{false, true} {
		t.Run(fmt.Sprint("json=", jsonMode), func(t *testing.T) {
			f := newFakeFlowd(t)
			ctx, interrupt := context.WithCancel(testCtx(t))
			c := newCLI("")
			// Ctrl+C while flowctl waits for the user in the browser.
			c.browser.onOpen = func(string) { time.AfterFunc(50*time.Millisecond, interrupt) }
			args := []string{"connect", "github"}
			if jsonMode {
				args = append(args, "--json")
			}
			require.Equal(t, ExitInterrupted, c.run(ctx, f.socket, args...))
			_, cancels, _ := f.snapshot()
			require.Len(t, cancels, 1, "the flow is canceled in flowd")
			fl := f.flow(cancels[0])
			assert.Equal(t, "error", fl.Status)
			assert.Equal(t, "canceled", fl.Reason)
			assert.Contains(t, c.stderr.String(), "Interrupted: flow "+shortID(cancels[0])+" is canceled in flowd.")
			if jsonMode {
				m := oneJSON(t, c.stdout.String())
				assert.Equal(t, "canceled", m["reason"])
			}
		})
	}
}

func TestConnectManualPaste(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paste func(state string) string
		want  wire.CallbackRequest
		code  int
	}{
		{"full URL", func(s string) string {
			return "http://127.0.0.1:8085/oauth/callback?code=abc123&state=" + s + "\n"
		}, wire.CallbackRequest{Code: "abc123"}, ExitOK},
		{"query string only", func(s string) string { return "?state=" + s + "&code=q-code\n" }, wire.CallbackRequest{Code: "q-code"}, ExitOK},
		{"full URL with iss", func(s string) string {
			return "http://127.0.0.1:8085/oauth/callback?code=abc123&state=" + s + "&iss=https%3A%2F%2Fidp.example\n"
		}, wire.CallbackRequest{Code: "abc123", Iss: "https://idp.example"}, ExitOK},
		{"query without question mark", func(s string) string { return "code=nq&state=" + s + "\n" }, wire.CallbackRequest{Code: "nq"}, ExitOK},
		{"bare code", func(string) string { return "  4/0AfJohXn-bare_code  \n" }, wire.CallbackRequest{Code: "4/0AfJohXn-bare_code"}, ExitOK},
		{"empty lines, garbage, then the URL", func(s string) string {
			return "\n\nnot a code at all\nhttps://example/cb?foo=bar\nhttp://127.0.0.1:8085/oauth/callback?code=late&state=" + s + "\n"
		}, wire.CallbackRequest{Code: "late"}, ExitOK},
		{"another flow's URL, then ours", func(s string) string {
			return "http://127.0.0.1:8085/oauth/callback?code=x&state=someoneelse\n?code=ours&state=" + s + "\n"
		}, wire.CallbackRequest{Code: "ours"}, ExitOK},
		{"provider denial", func(s string) string {
			return "http://127.0.0.1:8085/oauth/callback?error=access_denied&error_description=User+said+no&state=" + s + "\n"
		}, wire.CallbackRequest{Error: "access_denied", ErrorDescription: "User said no"}, ExitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFlowd(t)
			f.nextState = "manualstate0123456789"
			c := newCLI(tc.paste(f.nextState))
			c.env = map[string]string{"SSH_CONNECTION": "x"}
			code := c.run(testCtx(t), f.socket, "connect", "github", "--transport", "manual")
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", c.stdout, c.stderr)
			_, _, cbs := f.snapshot()
			require.Len(t, cbs, 1, "exactly one paste reached flowd")
			tc.want.State = "manualstate0123456789"
			assert.Equal(t, tc.want, cbs[0])
			assert.Contains(t, c.stdout.String(), "Paste the address the browser ended on (or just the code)")
			assert.Empty(t, c.browser.urls())
		})
	}
	t.Run("the callback reaches flowd without a paste", func(t *testing.T) {
		f := newFakeFlowd(t)
		f.onStart = func(st wire.StartResponse) {
			time.Sleep(50 * time.Millisecond)
			f.finish(st.State, states.Exchanged, states.Data{})
		}
		c := newCLI("") // stdin at EOF at once
		c.d.stdin = strings.NewReader("")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "manual"))
		_, _, cbs := f.snapshot()
		assert.Empty(t, cbs)
		assert.Contains(t, c.stdout.String(), "Connected github.")
	})
	t.Run("a bare code where the provider sends iss is refused locally", func(t *testing.T) {
		f := newFakeFlowd(t)
		f.nextState = "issstate0123456789"
		f.shapeFlow = func(fl *wire.Flow) { fl.IssuerRequired = true }
		c := newCLI("bare-code-1\nhttp://127.0.0.1:8085/oauth/callback?code=c2&state=issstate0123456789&iss=https%3A%2F%2Fidp.example\n")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "manual", "--no-browser"))
		assert.Contains(t, c.stdout.String(), "paste the whole address")
		_, _, cbs := f.snapshot()
		require.Len(t, cbs, 1, "the bare code never reached flowd, where it would have ended the flow issuer_mismatch")
		assert.Equal(t, wire.CallbackRequest{State: "issstate0123456789", Code: "c2", Iss: "https://idp.example"}, cbs[0])
	})
	t.Run("flowd refuses a paste, the user pastes again", func(t *testing.T) {
		f := newFakeFlowd(t)
		f.nextState = "refusedstate"
		calls := 0
		f.onCallback = func(req wire.CallbackRequest) (wire.Flow, *wire.Error, int) {
			calls++
			if calls == 1 {
				return wire.Flow{}, &wire.Error{Err: wire.ErrorBody{Code: wire.CodeBadRequest, Message: "code is too long"}}, 400
			}
			f.finish(req.State, states.Exchanged, states.Data{})
			return f.flow(req.State), nil, 0
		}
		c := newCLI("first\nsecond\n")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "manual", "--no-browser"))
		assert.Contains(t, c.stdout.String(), "flowd did not take it: code is too long")
		_, _, cbs := f.snapshot()
		require.Len(t, cbs, 2)
		assert.Equal(t, "second", cbs[1].Code)
	})
}

func TestParsePaste(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pasted
		err  string
	}{
		{"http://127.0.0.1:8085/oauth/callback?code=c1&state=s1", pasted{State: "s1", Code: "c1"}, ""},
		{"https://gw.example.com/oauth/callback?state=s2&code=c%2F2&scope=repo", pasted{State: "s2", Code: "c/2"}, ""},
		{`"http://localhost/cb?code=q&state=s"`, pasted{State: "s", Code: "q"}, ""},
		{"/oauth/callback?code=p&state=s", pasted{State: "s", Code: "p"}, ""},
		{"?code=x&state=y", pasted{State: "y", Code: "x"}, ""},
		{"code=x", pasted{Code: "x"}, ""},
		{"http://localhost/cb#code=frag&state=s", pasted{State: "s", Code: "frag"}, ""},
		{"http://localhost/cb?code=c&state=s#_=_", pasted{State: "s", Code: "c"}, ""},
		{"error=access_denied&error_description=no+way&state=s", pasted{State: "s", Error: "access_denied", ErrorDescription: "no way"}, ""},
		{"http://127.0.0.1:8085/oauth/callback?code=c1&state=s1&iss=https%3A%2F%2Fidp.example", pasted{State: "s1", Code: "c1", Iss: "https://idp.example"}, ""},
		{"barecode-123_ABC/xyz", pasted{Code: "barecode-123_ABC/xyz"}, ""},
		{"   ", pasted{}, "nothing pasted"},
		{"two words", pasted{}, "not a URL or a code"},
		{"http://localhost/cb?state=s", pasted{}, "neither a code nor an error"},
		{"http://localhost/cb?code=%zz", pasted{}, "does not parse"},
		{strings.Repeat("c", wire.MaxCodeLen+1), pasted{}, "more than the 4096"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parsePaste(tc.in)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestConnectShowsLiveCountdownOnlyOnATerminal(t *testing.T) {
	f := newFakeFlowd(t)
	f.onStart = func(st wire.StartResponse) {
		time.Sleep(150 * time.Millisecond)
		f.finish(st.State, states.Exchanged, states.Data{})
	}
	c := newCLI("")
	c.d.isTerminal = func(io.Writer) bool { return true }
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github"))
	out := c.stdout.String()
	assert.Regexp(t, regexp.MustCompile(`\r\x1b\[KWaiting for you to approve in the browser: \dm\d\ds left \(Ctrl\+C cancels\)`), out)
	// The line is erased before the result, so the result starts a clean line.
	assert.Contains(t, out, clearLine+"Connected github.")

	f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
	c = newCLI("")
	c.d.isTerminal = func(io.Writer) bool { return true }
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--json"))
	assert.NotContains(t, c.stdout.String(), clearLine, "no live line with --json")
	oneJSON(t, c.stdout.String())
}

func TestFormatLeft(t *testing.T) {
	assert.Equal(t, "4m05s", formatLeft(4*time.Minute+5*time.Second))
	assert.Equal(t, "42s", formatLeft(42*time.Second+100*time.Millisecond))
	assert.Equal(t, "0s", formatLeft(-time.Second))
	assert.Equal(t, "1h02m03s", formatLeft(time.Hour+2*time.Minute+3*time.Second))
}

func TestConnectManualCtrlCWhileWaitingForAPaste(t *testing.T) {
	f := newFakeFlowd(t)
	pr, pw := io.Pipe() // the user never pastes
	defer pw.Close()
	c := newCLI("")
	c.d.stdin = pr
	ctx, interrupt := context.WithCancel(testCtx(t))
	f.onStart = func(wire.StartResponse) { time.AfterFunc(50*time.Millisecond, interrupt) }
	require.Equal(t, ExitInterrupted, c.run(ctx, f.socket, "connect", "github", "--transport", "manual"))
	_, cancels, cbs := f.snapshot()
	require.Len(t, cancels, 1)
	assert.Empty(t, cbs)
	assert.Equal(t, "canceled", f.flow(cancels[0]).Reason)
}

func TestTablesHaveNoTrailingBlanks(t *testing.T) {
	f := newFakeFlowd(t)
	f.addFlow("tbl0123456789", "github", states.Loopback, 5*time.Minute)
	for _, args := range [][]string{{"list"}, {"inspect", "tbl"}, {"status", "tbl"}, {"providers"}} {
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, args...), args)
		for _, l := range strings.Split(c.stdout.String(), "\n") {
			assert.Equal(t, strings.TrimRight(l, " \t"), l, "%v: trailing blanks", args)
		}
	}
}

// The config's ttl applies to flowctl connect unless --timeout is given:
// flowctl sends no ttl of its own by default (issue 11, part 3).
func TestConnectUsesConfiguredTTLUnlessTimeoutGiven(t *testing.T) {
	socket, _ := realFlowd(t, "ttl = \"3s\"\n"+staticProvider)
	lifetime := func(args ...string) time.Duration {
		t.Helper()
		c := newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), socket, append([]string{"connect", "fake", "--no-browser", "--json"}, args...)...), c.stderr.String())
		state := oneJSON(t, c.stdout.String())["state"].(string)
		c = newCLI("")
		require.Equal(t, ExitOK, c.run(testCtx(t), socket, "status", state, "--json"), c.stderr.String())
		m := oneJSON(t, c.stdout.String())
		created, err := time.Parse(time.RFC3339Nano, m["created_at"].(string))
		require.NoError(t, err)
		expires, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
		require.NoError(t, err)
		return expires.Sub(created)
	}
	require.Equal(t, 3*time.Second, lifetime(), "no --timeout: the config's ttl")
	require.Equal(t, 90*time.Second, lifetime("--timeout", "90s"), "--timeout overrides the config")
}
