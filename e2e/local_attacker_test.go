package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/internal/dextest"
)

// The attacker helper's modes, given in attackerEnv: "ps" prints the
// command line of every process it can read; "get" requests each URL in
// attackerURLsEnv (newline-separated) without cookies and prints the status.
const (
	attackerEnv     = "FLOWD_E2E_ATTACKER"
	attackerURLsEnv = "FLOWD_E2E_ATTACKER_URLS"
	attackerUID     = 65534
)

// TestLocalAttackerHelper is not a test: it is what another local user
// runs in TestLocalAttackerCannotDenyOrHijack, as uid 65534.
func TestLocalAttackerHelper(t *testing.T) {
	switch os.Getenv(attackerEnv) {
	case "ps":
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
			if err != nil || len(raw) == 0 {
				continue
			}
			fmt.Printf("ARGV %s\n", strconv.Quote(string(bytes.ReplaceAll(bytes.TrimRight(raw, "\x00"), []byte{0}, []byte{' '}))))
		}
	case "get":
		c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, u := range strings.Split(os.Getenv(attackerURLsEnv), "\n") {
			resp, err := c.Get(u)
			if err != nil {
				fmt.Printf("STATUS error %v\n", err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Printf("STATUS %d %s\n", resp.StatusCode, strconv.Quote(pageWords(string(body))))
		}
	default:
		t.Skip("helper process for TestLocalAttackerCannotDenyOrHijack; runs only as its child")
	}
}

var tagsRe = regexp.MustCompile(`<[^>]*>`)

func pageWords(html string) string {
	return strings.Join(strings.Fields(tagsRe.ReplaceAllString(html, " ")), " ")
}

// attacker runs the helper as uid 65534 and returns its output lines that
// start with prefix, prefix removed.
func attacker(t *testing.T, bin, mode, prefix string, urls ...string) []string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestLocalAttackerHelper$", "-test.v")
	cmd.Env = append(os.Environ(), attackerEnv+"="+mode, attackerURLsEnv+"="+strings.Join(urls, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: attackerUID, Gid: attackerUID}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "attacker helper as uid %d: %s", attackerUID, out)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			lines = append(lines, l)
		}
	}
	return lines
}

// attackerBinary copies this test binary where uid 65534 may run it.
func attackerBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "fdattacker")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	bin := filepath.Join(dir, "e2e.test")
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	return bin
}

// fakeOpener installs an xdg-open that records the URL it was given and
// stays running until release is called, so its command line can be read
// from /proc meanwhile, as anyone on the machine can.
func fakeOpener(t *testing.T) (pathDir, opened string, release func()) {
	t.Helper()
	dir := t.TempDir()
	opened, gate := filepath.Join(dir, "opened"), filepath.Join(dir, "release")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s' \"$1\" > %q.tmp && mv %q.tmp %q\nwhile [ ! -e %q ] && [ -d %q ]; do sleep 0.05; done\n", opened, opened, opened, gate, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "xdg-open"), []byte(script), 0o755))
	return dir, opened, func() { _ = os.WriteFile(gate, nil, 0o600) }
}

// Issue 17, as another local user would try it while the victim runs
// `flowctl connect`. The browser opener's command line (readable by every
// user) holds only the one-time launch link: no state, no PKCE challenge,
// no provider URL, and the link is useless once the victim's browser used
// it. A forged error=access_denied and an injected code (one the attacker
// got from the provider for the victim's flow, delivered without the
// victim's cookie) are both refused, change nothing, and show in the
// metrics; the victim's own callback, with the cookie, completes.
func TestLocalAttackerCannotDenyOrHijack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running the attacker as another uid needs root")
	}
	r := newFlowdRig(t, rigOptions{})
	bin := attackerBinary(t)
	pathDir, opened, release := fakeOpener(t)
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := execFlowctl(ctx, r, "connect", "dex", "--timeout", "2m")
	cmd.Env = append(cmd.Env, "DISPLAY=:99", "PATH="+pathDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var launchURL string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(opened)
		launchURL = string(b)
		return err == nil
	}, time.Minute, 20*time.Millisecond, "flowctl runs the browser opener")
	var list struct {
		Flows []struct {
			State string `json:"state"`
		} `json:"flows"`
	}
	res := r.flowctlJSON(&list, "list", "--status", "awaiting_callback", "--json")
	require.Equal(t, 0, res.code, res.stderr)
	require.Len(t, list.Flows, 1)
	state := list.Flows[0].State
	r.states = append(r.states, state)

	// The attacker reads every command line on the machine.
	argvs := attacker(t, bin, "ps", "ARGV ")
	require.NotEmpty(t, argvs, "uid %d reads other users' command lines", attackerUID)
	var openerArgv string
	for _, a := range argvs {
		// This run's opener: an opener of another test run may be alive too.
		if strings.Contains(a, "xdg-open") && strings.Contains(a, pathDir) {
			openerArgv = a
		}
		assert.NotContains(t, a, state, "a command line carries the flow's state")
		assert.NotContains(t, a, "code_challenge", "a command line carries a PKCE challenge")
		assert.NotContains(t, a, r.dex.AuthURL, "a command line carries the provider's URL")
	}
	require.NotEmpty(t, openerArgv, "the attacker sees the opener")
	t.Logf("the opener's command line as uid %d sees it: %s", attackerUID, openerArgv)
	assert.Contains(t, openerArgv, "/oauth/launch?t=", "all the opener gets is the launch link")
	assert.Contains(t, openerArgv, launchURL)

	// The victim's browser opens the link, signs in and comes back.
	authURL, err := r.user.Launch(ctx, launchURL)
	require.NoError(t, err)
	final := r.browse(authURL)

	// The attacker: the launch link read from argv, a forged denial, and
	// the victim's redirect with a code the attacker got from the provider
	// for this flow (assume the state leaked some other way).
	injected, err := (&dextest.Browser{Connector: dextest.MockConnector}).Authorize(ctx, authURL)
	require.NoError(t, err)
	require.NotEmpty(t, injected.Query().Get("code"))
	forged := "http://" + r.listen + "/oauth/callback?" + url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {"forged"}}.Encode()
	got := attacker(t, bin, "get", "STATUS ", launchURL, forged, injected.String())
	require.Len(t, got, 3, "%v", got)
	assert.True(t, strings.HasPrefix(got[0], "409 "), "the used launch link is useless: %s", got[0])
	assert.Contains(t, got[0], "already opened")
	assert.True(t, strings.HasPrefix(got[1], "403 "), "a forged denial is refused: %s", got[1])
	assert.Contains(t, got[1], "only that browser may finish it", "the page says what happened")
	assert.True(t, strings.HasPrefix(got[2], "403 "), "an injected code is refused: %s", got[2])
	assert.Equal(t, "awaiting_callback", r.status(state).Status, "the flow still waits for the victim")
	assert.Zero(t, r.dex.TokenRequests("authorization_code"), "no code was redeemed")

	status, page := r.land(final)
	assert.Equal(t, http.StatusOK, status, "the victim's own callback completes: %s", page)
	assert.True(t, saysConnected(page), page)
	release()
	select {
	case err := <-done:
		require.NoError(t, err, "flowctl connect: %s\n%s", stdout.String(), stderr.String())
	case <-ctx.Done():
		t.Fatalf("flowctl connect did not finish: %s\n%s", stdout.String(), stderr.String())
	}
	assert.Contains(t, stdout.String(), "Connected dex")
	assert.Equal(t, 1, r.dex.TokenRequests("authorization_code"), "only the victim's code was redeemed")

	code, metrics, err := r.get(ctx, "/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, metrics, `flowd_callbacks_refused_unbound_total{reason="binding_missing"} 2`)
	assert.Contains(t, metrics, `flowd_browser_requests_total{outcome="launch_used"} 1`)
}
