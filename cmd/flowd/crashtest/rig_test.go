package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
)

// bins is the flowd binary, built once per test run.
var bins struct {
	once  sync.Once
	dir   string
	flowd string
	took  time.Duration
	err   error
}

// flowdBinary builds cmd/flowd into a temporary directory. Without
// FLOWD_CRASH_RACE it is built without the race detector even when the
// tests run with it: the crash test measures what a user's flowd does
// under SIGKILL, and a race build is several times slower to start, which
// would cut the kills a bounded run can afford. flowd's races are caught
// by its own -race tests and by e2e, which builds it with -race.
func flowdBinary(t *testing.T) string {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "flowd-crash-bin")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		args := []string{"build", "-o", filepath.Join(dir, "flowd")}
		if os.Getenv("FLOWD_CRASH_RACE") == "1" {
			args = append(args, "-race")
		}
		args = append(args, "github.com/flowdhq/flowd/cmd/flowd")
		begin := time.Now()
		// Run in the test's own directory: it is inside the module, so the
		// import path resolves wherever this package lives.
		cmd := exec.Command("go", args...)
		out, err := cmd.CombinedOutput()
		bins.took = time.Since(begin)
		if err != nil {
			bins.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		bins.flowd = filepath.Join(dir, "flowd")
	})
	if bins.err != nil {
		t.Fatalf("build flowd: %v", bins.err)
	}
	return bins.flowd
}

// Secrets of the fake provider's client; the scans look for them.
const (
	clientID     = "crash-client"
	clientSecret = "cs-crash-5e1f0a9b7c3d"
)

// newProvider is an in-process OAuth token endpoint that outlives every
// flowd it serves. The crash test makes up its codes: "c-..." codes are
// redeemable (once), any other is refused. The endpoint records every code
// it is asked to redeem, so the test can count codes redeemed twice, and
// every secret it hands out or receives, so the test can look for them
// where they must not be. It takes up to delay to answer: that widens the
// window in which a SIGKILL lands mid-exchange.
func newProvider(t *testing.T, delay time.Duration) *oauthtest.Server {
	o := oauthtest.Options{ClientID: clientID, ClientSecret: clientSecret,
		AcceptCode: func(code string) bool { return strings.HasPrefix(code, "c-") }}
	if delay > 0 {
		o.Latency = func() { time.Sleep(rand.N(delay)) }
	}
	return oauthtest.New(t, o)
}

func randHex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[rand.N(16)]
	}
	return string(b)
}

// rig is one flowd state directory and the flowd processes run on it.
type rig struct {
	t        *testing.T
	bin      string
	dir      string // short: it holds the socket
	stateDir string
	socket   string
	config   string
	listen   string
	// out collects the output of every flowd run on the rig.
	out  syncbuf.Buffer
	proc *proc

	api *http.Client
	web *http.Client
}

type rigOptions struct {
	// ttl is the config's default flow lifetime ("" for flowd's default).
	ttl string
	// extra is appended to the config's top level.
	extra string
	// stateDir overrides the state directory (a small tmpfs, say).
	stateDir string
	// listen is flowd's loopback address; "" picks a free port. A provider
	// that must know the redirect URI before flowd's config is written
	// (Dex) needs it chosen first.
	listen string
	// providers replaces the [providers.fake] table (which points at p).
	providers string
}

// gatewayBaseURL is flowd's public_base_url: the gateway transport's
// redirect URI is gatewayBaseURL + "/oauth/callback". Nothing serves it;
// the tests relay its callbacks themselves.
const gatewayBaseURL = "https://gw.example.test"

// newRig writes a config for p and prepares directories; it does not start flowd.
func newRig(t *testing.T, p *oauthtest.Server, o rigOptions) *rig {
	t.Helper()
	dir, err := os.MkdirTemp("", "fdc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &rig{t: t, bin: flowdBinary(t), dir: dir, socket: filepath.Join(dir, "s"),
		stateDir: filepath.Join(dir, "state"), config: filepath.Join(dir, "flowd.toml"), listen: o.listen}
	if o.stateDir != "" {
		r.stateDir = o.stateDir
	}
	if r.listen == "" {
		r.listen = freePort(t)
	}
	ttl := ""
	if o.ttl != "" {
		ttl = fmt.Sprintf("ttl = %q\n", o.ttl)
	}
	tokenURL := "http://127.0.0.1:1/token"
	if p != nil {
		tokenURL = p.TokenURL
	}
	providers := o.providers
	if providers == "" {
		providers = fmt.Sprintf(`[providers.fake]
auth_url = "https://auth.example.test/authorize"
token_url = %q
client_id = %q
client_secret = %q
auth_style = "in_params"
scopes = ["read"]
`, tokenURL, clientID, clientSecret)
	}
	cfg := fmt.Sprintf(`listen = %q
public_base_url = %q
%s%s
%s`, r.listen, gatewayBaseURL, ttl, o.extra, providers)
	require.NoError(t, os.WriteFile(r.config, []byte(cfg), 0o600))

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.socket)
	}, MaxIdleConnsPerHost: 64}
	r.api = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	wtr := &http.Transport{MaxIdleConnsPerHost: 64}
	r.web = &http.Client{Transport: wtr, Timeout: 20 * time.Second}
	t.Cleanup(func() {
		if r.proc != nil {
			r.kill()
		}
		tr.CloseIdleConnections()
		wtr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("flowd output (last 8 KiB):\n%s", tail(r.out.String(), 8<<10))
		}
	})
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// freePort returns a loopback host:port nothing listens on. flowd binds
// it again after every restart: after a SIGKILL the kernel frees it at once.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// env is flowd's environment: nothing of the caller's XDG, HOME or FLOWD_
// settings, so only the flags and the config file decide.
func (r *rig) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "XDG_") || strings.HasPrefix(k, "FLOWD_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+r.dir, "FLOWD_LOG_LEVEL=debug")
}

func (r *rig) args() []string {
	return []string{"-config", r.config, "-state-dir", r.stateDir, "-socket", r.socket, "-listen", r.listen}
}

// proc is one flowd process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// spawn starts flowd and returns at once.
func (r *rig) spawn() *proc {
	r.t.Helper()
	require.Nil(r.t, r.proc, "flowd is already running")
	cmd := exec.Command(r.bin, r.args()...)
	cmd.Env = r.env()
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	require.NoError(r.t, cmd.Start(), "start flowd")
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	r.proc = p
	return p
}

// ready waits until flowd answers GET /v1/health on its socket.
func (r *rig) ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://flowd/v1/health", nil)
		resp, err := r.api.Do(req)
		if err == nil {
			resp.Body.Close()
			cancel()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		cancel()
		select {
		case <-r.proc.exited:
			return fmt.Errorf("flowd exited before it was ready (%v):\n%s", r.proc.err, tail(r.out.String(), 4<<10))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flowd did not answer on %s within %v", r.socket, timeout)
		}
	}
}

// start spawns flowd and waits until it is ready.
func (r *rig) start() {
	r.t.Helper()
	r.spawn()
	require.NoError(r.t, r.ready(30*time.Second))
}

// kill ends flowd with SIGKILL: it gets no chance to close anything.
func (r *rig) kill() {
	p := r.proc
	r.proc = nil
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop ends flowd with SIGTERM and returns its exit error.
func (r *rig) stop() error {
	p := r.proc
	r.proc = nil
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New("flowd did not exit within 30s of SIGTERM")
	}
}

// run runs flowd to completion (for start-up failures) and returns its
// exit code and output. It gives up after timeout.
func (r *rig) run(timeout time.Duration) (int, string) {
	r.t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args()...)
	cmd.Env = r.env()
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		r.t.Fatalf("flowd did not exit within %v:\n%s", timeout, out.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	r.t.Fatalf("run flowd: %v", err)
	return -1, ""
}

// reply is one API response read whole.
type reply struct {
	status int
	body   []byte
}

func (rp reply) errCode() string {
	var e wire.Error
	_ = json.Unmarshal(rp.body, &e)
	return e.Err.Code
}

func (rp reply) errMessage() string {
	var e wire.Error
	_ = json.Unmarshal(rp.body, &e)
	return e.Err.Message
}

// call does one API request on the unix socket. err is set when no
// response came back (flowd down or killed mid-request): nothing was
// acknowledged then.
func (r *rig) call(method, path string, body any) (reply, error) {
	return do(r.api, method, "http://flowd"+path, body, nil)
}

func do(c *http.Client, method, url string, body any, hdr map[string]string) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		// A response cut short is not an acknowledgement.
		return reply{}, err
	}
	return reply{status: resp.StatusCode, body: b}, nil
}
