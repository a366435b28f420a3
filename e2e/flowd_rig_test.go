package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/internal/syncbuf"
)

// flowdRig runs the flowd daemon and the flowctl client as a user would:
// built binaries, embedded defaults, temporary XDG directories, a config
// file pointing at a real Dex.
type flowdRig struct {
	t                  *testing.T
	dex                *dextest.Server
	flowdBin, flowctlB string

	home, stateHome, configHome string
	// runtimeDir holds the socket; it is short (os.MkdirTemp) because a
	// unix socket path must stay under 108 bytes.
	runtimeDir string
	listen     string

	// out is everything every flowd process of the test wrote.
	out syncbuf.Buffer
	// cliOut is everything flowctl printed, except `flowctl token`, whose
	// job is to print a token.
	cliOut syncbuf.Buffer
	// states are the flows the test started, exported at the end.
	states []string
	// gatewayURL is the fake public gateway's base URL (rigOptions.gateway).
	gatewayURL string

	proc *flowdProc
	// user is the user's browser: one cookie jar for the whole test, so
	// the binding cookie a launch link sets goes with the callback.
	user *dextest.Browser
}

type rigOptions struct {
	dex dextest.Options
	// gateway runs a public gateway that relays callbacks to flowd as
	// svc_gateway, and configures flowd's public_base_url to it.
	gateway bool
	// extraConfig is appended to the config file's top level.
	extraConfig string
}

// secretEnv holds the client secret, so the config file itself carries
// none (client_secret_env).
const secretEnv = "FLOWD_E2E_DEX_SECRET"

func newFlowdRig(t *testing.T, opts rigOptions) *flowdRig {
	t.Helper()
	dextest.Binary(t) // skip (or fail in CI) before spending a build
	flowd, flowctl := buildBinaries(t)
	r := &flowdRig{t: t, flowdBin: flowd, flowctlB: flowctl, home: t.TempDir()}
	r.stateHome = filepath.Join(r.home, "state")
	r.configHome = filepath.Join(r.home, "config")
	r.runtimeDir = shortDir(t)

	t.Cleanup(func() {
		var export string
		if r.proc != nil {
			export = r.export()
			r.stop()
		}
		if t.Failed() {
			t.Logf("flowd output:\n%s", r.out.String())
		}
		if r.dex != nil {
			r.scanForSecrets(export)
		}
	})

	// flowd's port is chosen before Dex starts, because Dex must know the
	// redirect URI; on a shared machine another process may take the port
	// meanwhile, and then a fresh port (and Dex) is tried.
	extra := opts.extraConfig
	var redirects []string
	if opts.gateway {
		gw := httptest.NewServer(http.HandlerFunc(r.relay))
		t.Cleanup(gw.Close)
		r.gatewayURL = gw.URL
		redirects = append(redirects, gw.URL+"/oauth/callback")
		extra += fmt.Sprintf("\npublic_base_url = %q\n", gw.URL)
	}
	for attempt := 1; ; attempt++ {
		r.listen = fmt.Sprintf("127.0.0.1:%d", dextest.FreePort(t))
		dexOpts := opts.dex
		dexOpts.RedirectURIs = append([]string{"http://" + r.listen + "/oauth/callback"}, redirects...)
		r.dex = dextest.Start(t, dexOpts)
		r.writeConfig(r.configHome, r.listen, extra)
		err := r.tryStart()
		if err == nil {
			r.user = r.dex.Browser()
			return r
		}
		if attempt == 3 || !strings.Contains(err.Error(), "already in use") {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; trying another port", attempt, err)
	}
}

func (r *flowdRig) writeConfig(configHome, listen, extra string) {
	r.t.Helper()
	cfg := fmt.Sprintf(`# flowd end-to-end test config
listen = %q
%s

[providers.dex]
auth_url = %q
token_url = %q
client_id = %q
client_secret_env = %q
scopes = ["openid", "email", "offline_access"]
auth_style = "in_header"

# The device grant (RFC 8628) through Dex's public client: Dex sends a
# confidential client's device login to a path outside its issuer.
[providers.dex-device]
auth_url = %q
token_url = %q
device_auth_url = %q
client_id = %q
scopes = ["openid", "email", "offline_access"]
auth_style = "in_params"
`, listen, extra, r.dex.AuthURL, r.dex.TokenURL, dextest.ClientID, secretEnv,
		r.dex.AuthURL, r.dex.TokenURL, r.dex.DeviceAuthURL, dextest.PublicClientID)
	dir := filepath.Join(configHome, "flowd")
	require.NoError(r.t, os.MkdirAll(dir, 0o700))
	require.NoError(r.t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600))
}

// relay is the public gateway's /oauth/callback: it hands the browser's
// redirect to flowd as svc_gateway, with the service token flowd wrote to
// its state directory, and shows the browser flowd's answer.
func (r *flowdRig) relay(w http.ResponseWriter, req *http.Request) {
	tok, err := os.ReadFile(filepath.Join(r.stateDir(), "service_token"))
	if err != nil {
		http.Error(w, "gateway: read flowd's service token: "+err.Error(), http.StatusBadGateway)
		return
	}
	q := req.URL.Query()
	body, _ := json.Marshal(map[string]string{
		"state": q.Get("state"), "code": q.Get("code"),
		"error": q.Get("error"), "error_description": q.Get("error_description"),
		"iss": q.Get("iss"), // RFC 9207: a gateway passes iss on for flowd to check
	})
	out, err := http.NewRequestWithContext(req.Context(), http.MethodPost, "http://"+r.listen+"/v1/callbacks", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header.Set("Content-Type", "application/json")
	out.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, "gateway: relay to flowd: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// stateDir is where flowd keeps its database by default.
func (r *flowdRig) stateDir() string { return filepath.Join(r.stateHome, "flowd") }

func (r *flowdRig) socket() string { return filepath.Join(r.runtimeDir, "flowd.sock") }

// env is the environment of flowd and flowctl: the test's XDG directories,
// no display (so nothing tries to open a browser), and the client secret.
func (r *flowdRig) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "XDG_"), k == "HOME", k == "DISPLAY", k == "WAYLAND_DISPLAY", k == "BROWSER",
			strings.HasPrefix(k, "FLOWD_"), k == "GORACE", k == "GOGC",
			// A test run over SSH must not turn flowctl's default transport into device or manual.
			k == "SSH_CONNECTION", k == "SSH_TTY":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+r.home,
		"XDG_STATE_HOME="+r.stateHome,
		"XDG_CONFIG_HOME="+r.configHome,
		"XDG_RUNTIME_DIR="+r.runtimeDir,
		secretEnv+"="+dextest.ClientSecret,
		// The most verbose logs give a leak the most chances to show.
		"FLOWD_LOG_LEVEL=debug",
		// A data race in the daemon ends it at once, and the test with it.
		// The race runtime's default 1s sleep at exit would add a second
		// to every flowctl run.
		"GORACE=halt_on_error=1 atexit_sleep_ms=0",
	)
}

// shortDir returns a temporary directory with a short path, for unix
// sockets (under 108 bytes; t.TempDir() can be longer).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// execFlowctl prepares a flowctl run with the rig's environment.
func execFlowctl(ctx context.Context, r *flowdRig, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.flowctlB, args...)
	cmd.Env = r.env()
	// Wait must not hang on a pipe if flowctl is killed at the deadline.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// flowdProc is one running flowd.
type flowdProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// spawn starts a flowd with env and returns at once.
func (r *flowdRig) spawn(env []string, out io.Writer, args ...string) *flowdProc {
	r.t.Helper()
	cmd := exec.Command(r.flowdBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(r.t, cmd.Start(), "start flowd")
	p := &flowdProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p
}

// start runs flowd and waits until it answers on its socket.
func (r *flowdRig) start() {
	r.t.Helper()
	if err := r.tryStart(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *flowdRig) tryStart() error {
	require.Nil(r.t, r.proc, "flowd already running")
	var out syncbuf.Buffer
	proc := r.spawn(r.env(), io.MultiWriter(&r.out, &out))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if r.healthy(ctx) {
			r.proc = proc
			return nil
		}
		select {
		case <-proc.exited:
			return fmt.Errorf("flowd exited before it was ready (%v):\n%s", proc.err, out.String())
		case <-ctx.Done():
			_ = proc.cmd.Process.Kill()
			<-proc.exited
			return fmt.Errorf("flowd did not answer on %s within 60s:\n%s", r.socket(), out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *flowdRig) healthy(ctx context.Context) bool {
	status, _, err := r.get(ctx, "/v1/health")
	return err == nil && status == http.StatusOK
}

// get sends GET path to flowd's API socket.
func (r *flowdRig) get(ctx context.Context, path string) (int, string, error) {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.socket())
	}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://flowd"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// kill ends flowd with SIGKILL: no chance to close anything.
func (r *flowdRig) kill() {
	r.t.Helper()
	require.NoError(r.t, r.proc.cmd.Process.Signal(syscall.SIGKILL))
	<-r.proc.exited
	r.proc = nil
}

// stop ends flowd with SIGTERM and expects a clean exit.
func (r *flowdRig) stop() {
	r.t.Helper()
	p := r.proc
	r.proc = nil
	require.NoError(r.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		r.t.Errorf("flowd did not exit within 30s of SIGTERM")
		return
	}
	assert.NoError(r.t, p.err, "flowd exits cleanly on SIGTERM")
}

// restart stops flowd cleanly and starts it again.
func (r *flowdRig) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

// result is one flowctl run.
type result struct {
	stdout, stderr string
	code           int
}

// flowctl runs flowctl with args and stdin (may be nil).
func (r *flowdRig) flowctl(stdin io.Reader, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.flowctlB, args...)
	cmd.Env = r.env()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		r.t.Fatalf("run flowctl %v: %v", args, err)
	}
	if len(args) == 0 || args[0] != "token" {
		fmt.Fprintf(&r.cliOut, "$ flowctl %s\n%s%s", strings.Join(args, " "), res.stdout, res.stderr)
	}
	return res
}

// flowctlJSON runs flowctl and decodes its one JSON object into v.
func (r *flowdRig) flowctlJSON(v any, args ...string) result {
	r.t.Helper()
	res := r.flowctl(nil, args...)
	require.NoError(r.t, json.Unmarshal([]byte(res.stdout), v),
		"flowctl %v prints one JSON object (exit %d)\nstdout: %s\nstderr: %s", args, res.code, res.stdout, res.stderr)
	return res
}

// started is what `flowctl connect --no-browser --json` prints.
type started struct {
	State       string    `json:"state"`
	AuthURL     string    `json:"auth_url"`
	LaunchURL   string    `json:"launch_url"`
	RedirectURI string    `json:"redirect_uri"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// flow is what `flowctl status|wait --json` prints.
type flow struct {
	State       string `json:"state"`
	Status      string `json:"status"`
	Reason      string `json:"reason"`
	Message     string `json:"message"`
	ErrorCode   string `json:"error_code"`
	TokenStored bool   `json:"token_stored"`
}

// startConnect runs `flowctl connect dex --no-browser --json` plus args.
func (r *flowdRig) startConnect(args ...string) started {
	r.t.Helper()
	var st started
	res := r.flowctlJSON(&st, append([]string{"connect", "dex", "--no-browser", "--json"}, args...)...)
	require.Equal(r.t, 0, res.code, "connect --no-browser --json exits 0: %s", res.stderr)
	require.NotEmpty(r.t, st.State)
	require.NotEmpty(r.t, st.AuthURL)
	r.states = append(r.states, st.State)
	return st
}

// browse does the user's part at Dex in the user's browser and returns
// where Dex redirected it: flowd's callback, not yet loaded. authURL may
// be the flow's launch link, which binds the flow to the user's browser.
func (r *flowdRig) browse(authURL string) *url.URL {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	final, err := r.user.Authorize(ctx, authURL)
	require.NoError(r.t, err, "browser")
	return final
}

// land loads the redirect in the "browser": flowd's loopback listener
// answers with its callback page. It returns the status and the page's text.
func (r *flowdRig) land(final *url.URL) (int, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status, page, err := r.user.Land(ctx, final)
	require.NoError(r.t, err, "load flowd's callback page")
	// The binding cookie is a secret too: the scan at the end checks it
	// reached no log, database or export.
	for _, c := range r.user.Jar.Cookies(final) {
		r.dex.Secrets.Add("binding_cookie", c.Value)
	}
	return status, page
}

// landElsewhere loads the redirect from a client without the user's
// cookies: another browser, or another user on the machine.
func (r *flowdRig) landElsewhere(final *url.URL) (int, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status, page, err := (&dextest.Browser{}).Land(ctx, final)
	require.NoError(r.t, err, "load flowd's callback page")
	return status, page
}

// wait runs `flowctl wait <state> --json`.
func (r *flowdRig) wait(state string) (flow, result) {
	r.t.Helper()
	var f flow
	res := r.flowctlJSON(&f, "wait", state, "--json")
	return f, res
}

// status runs `flowctl status <state> --json`; its exit code is 0 unless
// the flow ended in error or expired (then 1).
func (r *flowdRig) status(state string) flow {
	r.t.Helper()
	var f flow
	res := r.flowctlJSON(&f, "status", state, "--json")
	want := 0
	if f.Status == "error" || f.Status == "expired" {
		want = 1
	}
	require.Equal(r.t, want, res.code, "status of a %s flow: %s", f.Status, res.stderr)
	return f
}

// token runs `flowctl token dex --json` and checks Dex accepts the token.
func (r *flowdRig) token() string {
	r.t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	res := r.flowctlJSON(&tok, "token", "dex", "--json")
	require.Equal(r.t, 0, res.code, "token: %s", res.stderr)
	require.NotEmpty(r.t, tok.AccessToken)
	_, err := r.dex.Userinfo(context.Background(), tok.AccessToken)
	require.NoError(r.t, err, "dex accepts the token flowctl printed")
	return tok.AccessToken
}

// connect runs a whole loopback connect and asserts it completes.
func (r *flowdRig) connect() string {
	r.t.Helper()
	st := r.startConnect()
	status, page := r.land(r.browse(st.LaunchURL))
	assert.Equal(r.t, http.StatusOK, status, "callback page: %s", page)
	f, res := r.wait(st.State)
	require.Equal(r.t, 0, res.code, "wait: %s", res.stderr)
	require.Equal(r.t, "complete", f.Status, "flow %+v", f)
	assert.True(r.t, f.TokenStored)
	return st.State
}

// export runs `flowctl log export` and checks it holds the test's flows.
func (r *flowdRig) export() string {
	r.t.Helper()
	res := r.flowctl(nil, "log", "export")
	assert.Equal(r.t, 0, res.code, "log export: %s", res.stderr)
	for _, st := range r.states {
		assert.Contains(r.t, res.stdout, st, "the export holds flow %s", st)
	}
	return res.stdout
}

// scanForSecrets asserts no code, verifier, client secret or token seen in
// the run is in flowd's state directory, flowd's output, flowctl's output
// or the exported history of the test's flows.
func (r *flowdRig) scanForSecrets(export string) {
	t := r.t
	secrets := r.dex.Secrets
	assert.Empty(t, secrets.Leaks([]byte(export)), "secrets in the exported event log")
	scanned := 0
	_ = filepath.WalkDir(r.stateHome, func(path string, d fs.DirEntry, err error) error {
		// The service token's own file is where it belongs.
		if err != nil || !d.Type().IsRegular() || d.Name() == "service_token" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		scanned += len(data)
		assert.Empty(t, secrets.Leaks(data), "secrets in %s", path)
		return nil
	})
	assert.Empty(t, secrets.Leaks([]byte(r.out.String())), "secrets in flowd's output")
	assert.Empty(t, secrets.Leaks([]byte(r.cliOut.String())), "secrets in flowctl's output")
	assert.NotContains(t, r.out.String(), "DATA RACE", "flowd raced")
	t.Logf("secret scan: %d secrets (%v) against %d bytes of state dir, %d of flowd output, %d of flowctl output, %d of export",
		secrets.Len(), secrets.Kinds(), scanned, len(r.out.String()), len(r.cliOut.String()), len(export))
}

// lines streams a reader's lines into a channel and keeps them all.
type lines struct {
	mu  sync.Mutex
	all strings.Builder
	ch  chan string
}

func readLines(rd io.Reader) *lines {
	l := &lines{ch: make(chan string, 100)}
	go func() {
		defer close(l.ch)
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.all.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			l.ch <- sc.Text()
		}
	}()
	return l
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}
