package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/internal/syncbuf"
)

func TestFlowdConnectLoopback(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	st := r.startConnect()
	assert.True(t, strings.HasPrefix(st.AuthURL, r.dex.AuthURL), "auth_url %s is dex's", st.AuthURL)
	assert.True(t, strings.HasPrefix(st.LaunchURL, "http://"+r.listen+"/oauth/launch?t="), "launch_url %s is on the loopback listener", st.LaunchURL)
	assert.NotContains(t, st.LaunchURL, st.State)

	// The user's browser opens the launch link, which binds the flow to it.
	final := r.browse(st.LaunchURL)
	assert.Equal(t, r.listen, final.Host, "dex sends the browser to flowd's loopback listener")
	// The same redirect without the browser's cookie changes nothing.
	status, page := r.landElsewhere(final)
	assert.Equal(t, http.StatusForbidden, status, "a callback without the binding cookie is refused: %s", page)
	assert.Equal(t, "awaiting_callback", r.status(st.State).Status, "and the flow still waits")
	assert.Zero(t, r.dex.TokenRequests("authorization_code"), "and its code was not redeemed")
	status, page = r.land(final)
	assert.Equal(t, http.StatusOK, status, "callback page: %s", page)
	assert.True(t, saysConnected(page), "the page tells the user they are connected: %s", page)

	f, res := r.wait(st.State)
	require.Equal(t, 0, res.code, "wait exits 0 for a complete flow: %s", res.stderr)
	assert.Equal(t, "complete", f.Status)
	assert.True(t, f.TokenStored)
	r.token()

	// The browser reloading the page must not be told "connected" again
	// for a code that was not used.
	status, page = r.land(final)
	t.Logf("reloaded callback page: HTTP %d", status)
	assert.NotEqual(t, http.StatusInternalServerError, status, "page: %s", page)
	assert.False(t, saysConnected(page), "a reload does not claim success: %s", page)
}

// flowd runs with GOGC=400 when its environment sets none (its live heap
// is small; docs/config.md#memory), which the Go metrics on /metrics show,
// next to the log's group-commit counters.
func TestFlowdMetricsShowGOGCAndGroupCommits(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	r.connect()
	status, metrics, err := r.get(context.Background(), "/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	value := func(name string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(metrics)
		require.NotNil(t, m, "/metrics shows %s", name)
		v, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return v
	}
	assert.Greater(t, value("go_gc_gogc_percent"), 100, "flowd raised GOGC above Go's default for its small heap")
	commits, appends := value("flowd_log_commits_total"), value("flowd_log_appends_committed_total")
	assert.GreaterOrEqual(t, appends, 3, "a connect appends three times")
	assert.True(t, commits >= 1 && commits <= appends, "%d commits for %d appends", commits, appends)
}

func TestFlowdGatewayTransport(t *testing.T) {
	r := newFlowdRig(t, rigOptions{gateway: true})
	st := r.startConnect("--transport", "gateway")
	assert.Equal(t, r.gatewayURL+"/oauth/callback", st.RedirectURI, "the redirect goes to the public gateway")

	final := r.browse(st.AuthURL)
	status, body := r.land(final)
	assert.Equal(t, http.StatusOK, status, "gateway relay: %s", body)
	assert.Contains(t, body, `"connected"`, "flowd tells the gateway the outcome")

	f, res := r.wait(st.State)
	require.Equal(t, 0, res.code, "wait: %s", res.stderr)
	assert.Equal(t, "complete", f.Status)
	r.token()

	// The gateway's token is a credential: it must not be logged either.
	tok, err := os.ReadFile(filepath.Join(r.stateDir(), "service_token"))
	require.NoError(t, err)
	r.dex.Secrets.Add("service_token", strings.TrimSpace(string(tok)))
}

func TestFlowdRefreshRotatesAndSurvivesRestart(t *testing.T) {
	// Dex's access tokens live shorter than the margin before expiry at
	// which flowd refreshes, so every `flowctl token` refreshes: the second
	// refresh works only if the rotated refresh token was saved.
	r := newFlowdRig(t, rigOptions{dex: dextest.Options{AccessTokenTTL: 9 * time.Second}})
	r.connect()

	first := r.token()
	second := r.token()
	assert.NotEqual(t, first, second, "each token is a fresh one")
	assert.Equal(t, 2, r.dex.TokenRequests("refresh_token"))

	r.restart()
	r.token()
	assert.Equal(t, 3, r.dex.TokenRequests("refresh_token"), "the rotated refresh token was saved to disk")
}

func TestFlowdDenied(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	st := r.startConnect("--scopes", "openid,"+dextest.DeniedScope)
	final := r.browse(st.LaunchURL)
	require.NotEmpty(t, final.Query().Get("error"), "dex redirects with an error")
	status, page := r.land(final)
	t.Logf("denied callback page: HTTP %d", status)
	assert.False(t, saysConnected(page), "a denial does not read like success: %s", page)
	assert.Contains(t, strings.ToLower(page), "denied", "the page says the provider denied it")

	f, res := r.wait(st.State)
	assert.Equal(t, 1, res.code, "wait exits 1 for a failed flow")
	assert.Equal(t, "error", f.Status)
	assert.Equal(t, "provider_denied", f.Reason)
	assert.Equal(t, final.Query().Get("error"), f.ErrorCode)

	res = r.flowctl(nil, "token", "dex", "--json")
	assert.NotEqual(t, 0, res.code, "no token after a denial")
}

// saysConnected reports whether flowd's callback page tells the user the
// account is connected.
func saysConnected(page string) bool {
	return strings.Contains(strings.ToLower(page), "connected your")
}

var authURLRe = regexp.MustCompile(`https?://\S+/dex/auth\?\S+`)

func TestFlowdManualTransport(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cmd := execFlowctl(ctx, r, "connect", "dex", "--transport", "manual", "--no-browser")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	out, errOut := readLines(stdout), readLines(stderr)

	var authURL string
	for authURL == "" {
		select {
		case l, ok := <-out.ch:
			if !ok {
				out.ch = nil
			}
			authURL = authURLRe.FindString(l)
		case l, ok := <-errOut.ch:
			if !ok {
				errOut.ch = nil
			}
			authURL = authURLRe.FindString(l)
		case <-ctx.Done():
			t.Fatalf("flowctl printed no authorization URL:\n%s\n%s", out, errOut)
		}
		if out.ch == nil && errOut.ch == nil && authURL == "" {
			t.Fatalf("flowctl ended without printing an authorization URL:\n%s\n%s", out, errOut)
		}
	}
	u, err := url.Parse(authURL)
	require.NoError(t, err)
	r.states = append(r.states, u.Query().Get("state"))

	// The user's browser ends on a page that may not load; they paste its
	// address into flowctl.
	final := r.browse(authURL)
	_, err = fmt.Fprintln(stdin, final.String())
	require.NoError(t, err)

	err = cmd.Wait()
	for range out.ch {
	}
	for range errOut.ch {
	}
	fmt.Fprintf(&r.cliOut, "$ flowctl connect --transport manual\n%s%s", out, errOut)
	require.NoError(t, err, "connect --transport manual exits 0 after the paste\nstdout: %s\nstderr: %s", out, errOut)
	assert.Equal(t, "complete", r.status(u.Query().Get("state")).Status)
	r.token()
}

func TestFlowdFlowSurvivesSIGKILL(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	st := r.startConnect()
	// The browser opened the launch link before the kill: the binding is
	// in the log, so after the restart the flow still wants the cookie.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authURL, err := r.user.Launch(ctx, st.LaunchURL)
	require.NoError(t, err)
	r.kill()
	r.start()

	final := r.browse(authURL)
	status, page := r.landElsewhere(final)
	assert.Equal(t, http.StatusForbidden, status, "after a restart a callback without the binding is still refused: %s", page)
	status, page = r.land(final)
	assert.Equal(t, http.StatusOK, status, "callback page: %s", page)
	f, res := r.wait(st.State)
	require.Equal(t, 0, res.code, "wait: %s", res.stderr)
	assert.Equal(t, "complete", f.Status)
	r.token()
}

func TestFlowdFlowExpiresWhileDown(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	st := r.startConnect("--timeout", "3s")
	r.kill()
	if !time.Now().Before(st.ExpiresAt) {
		t.Skipf("the machine is too slow: flowd was killed after the flow's 3s deadline, so this run cannot show expiry while down")
	}
	time.Sleep(time.Until(st.ExpiresAt) + 500*time.Millisecond)
	r.start()

	f := r.status(st.State)
	assert.Equal(t, "expired", f.Status)
	assert.Equal(t, "expired_while_down", f.Reason)

	// A callback that comes late is not exchanged.
	status, page := r.land(r.browse(st.AuthURL))
	t.Logf("late callback page: HTTP %d", status)
	assert.NotEqual(t, http.StatusOK, status, "a late callback is not a success: %s", page)
	assert.False(t, saysConnected(page), "a late callback does not read like success: %s", page)
	assert.Zero(t, r.dex.TokenRequests("authorization_code"), "the late code was never redeemed")
}

func TestFlowdSecondInstanceOnSameStateDirFails(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})

	// Same state directory; its own socket, listener and config, so the
	// only thing the two share is the state directory.
	other := dextest.FreePort(t)
	configHome := filepath.Join(r.home, "config2")
	r.writeConfig(configHome, fmt.Sprintf("127.0.0.1:%d", other), "")
	env := append(r.env(), "XDG_CONFIG_HOME="+configHome, "XDG_RUNTIME_DIR="+shortDir(t))

	var out syncbuf.Buffer
	p := r.spawn(env, &out)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Fatalf("a second flowd on %s did not exit within 30s:\n%s", r.stateDir(), out.String())
	}
	assert.Error(t, p.err, "the second flowd exits non-zero")
	assert.Contains(t, out.String(), r.stateDir(), "the error names the state directory")
	t.Logf("second flowd said: %s", strings.TrimSpace(out.String()))

	// The first one is unharmed.
	assert.True(t, r.healthy(context.Background()), "the first flowd still answers")
}
