package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/persist"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// flowdBinary builds the real flowd once per test run: what a service
// manager starts and signals is the binary, not run().
func flowdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "flowdbin")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "flowd")
		// -buildvcs=true: the environment may turn stamping off (GOFLAGS),
		// and a user's `go install ./cmd/flowd` in a clone stamps it.
		out, err := exec.Command("go", "build", "-buildvcs=true", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			// Outside a checkout Go refuses -buildvcs=true; build without.
			out, err = exec.Command("go", "build", "-buildvcs=false", "-o", builtBin, ".").CombinedOutput()
		}
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return builtBin
}

// daemonProc is a real flowd process with its own state directory, config
// home and socket, stderr going to a file.
type daemonProc struct {
	cmd      *exec.Cmd
	dir      string
	stateDir string
	socket   string
	logPath  string
	waited   chan error
}

func startBinary(t *testing.T, extraEnv []string, args ...string) *daemonProc {
	t.Helper()
	bin := flowdBinary(t)
	dir, err := os.MkdirTemp("", "fdb") // short: unix socket paths are limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &daemonProc{dir: dir, stateDir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "s"),
		logPath: filepath.Join(dir, "stderr"), waited: make(chan error, 1)}
	logf, err := os.Create(p.logPath)
	require.NoError(t, err)
	defer logf.Close()
	p.run(t, bin, logf, extraEnv, args...)
	return p
}

// run starts flowd in p's directories with stdout and stderr going to
// logf, and kills it when the test ends unless it was waited for.
func (p *daemonProc) run(t *testing.T, bin string, logf *os.File, extraEnv []string, args ...string) {
	t.Helper()
	p.cmd = exec.Command(bin, append([]string{"-state-dir", p.stateDir, "-socket", p.socket, "-listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append([]string{"HOME=" + p.dir, "XDG_CONFIG_HOME=" + filepath.Join(p.dir, "config"), "PATH=" + os.Getenv("PATH")}, extraEnv...)
	p.cmd.Stderr = logf
	p.cmd.Stdout = logf
	require.NoError(t, p.cmd.Start())
	go func() { p.waited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.waited
		}
	})
}

// waitReady waits for the socket to appear (flowd is serving).
func (p *daemonProc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(p.socket); err == nil && strings.Contains(p.log(t), "flowd ready") {
			return
		}
		select {
		case err := <-p.waited:
			p.waited <- err
			t.Fatalf("flowd exited before it was ready (%v):\n%s", err, p.log(t))
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("flowd not ready after 30s:\n%s", p.log(t))
}

func (p *daemonProc) log(t *testing.T) string {
	b, err := os.ReadFile(p.logPath)
	require.NoError(t, err)
	return string(b)
}

func (p *daemonProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.waited:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("flowd did not exit within 30s:\n%s", p.log(t))
		return nil
	}
}

// A service manager stops flowd with SIGTERM: it must exit 0 (systemd
// counts anything else as a failure), remove its socket and close its
// event log, so the next start finds the database free at once.
func TestBinaryStopsCleanlyOnSIGTERM(t *testing.T) {
	p := startBinary(t, nil)
	p.waitReady(t)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t), "exit status after SIGTERM:\n%s", p.log(t))
	assert.Equal(t, 0, p.cmd.ProcessState.ExitCode())
	_, err := os.Stat(p.socket)
	assert.ErrorIs(t, err, os.ErrNotExist, "the socket is removed")
	assert.Contains(t, p.log(t), "stopped cleanly")
	// The log's lock is released: another process opens it at once.
	db, err := persist.Open(filepath.Join(p.stateDir, "flowd.db"), persist.Options{Timeout: 100 * time.Millisecond})
	require.NoError(t, err, "the event log is still locked after flowd exited")
	require.NoError(t, db.Close())
}

// Under systemd, stderr is the journal, which stamps each line: flowd
// leaves its own time out there, and only there.
func TestBinaryLogsToTheJournalWithoutItsOwnTime(t *testing.T) {
	// The stderr file stands for the journal's stream: JOURNAL_STREAM
	// names its device and inode, as systemd does.
	journal := func(p *daemonProc) string {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(p.logPath, &st))
		return fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)
	}
	for _, tc := range []struct {
		name     string
		env      func(p *daemonProc) []string
		wantTime bool
	}{
		{"journal", func(p *daemonProc) []string { return []string{journal(p)} }, false},
		{"inherited variable, stderr elsewhere", func(*daemonProc) []string { return []string{"JOURNAL_STREAM=1:2"} }, true},
		{"no journal", func(*daemonProc) []string { return nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Start once to learn the file, then again with the variable:
			// the inode is the stderr file's, created before the start.
			p := startBinary(t, nil, "-version")
			require.NoError(t, p.wait(t))
			env := tc.env(p)
			p2 := startBinaryWithLog(t, p, env)
			p2.waitReady(t)
			require.NoError(t, p2.cmd.Process.Signal(syscall.SIGTERM))
			require.NoError(t, p2.wait(t))
			lines := 0
			sc := bufio.NewScanner(strings.NewReader(p2.log(t)))
			for sc.Scan() {
				if !strings.Contains(sc.Text(), "level=") {
					continue
				}
				lines++
				assert.Equal(t, tc.wantTime, strings.HasPrefix(sc.Text(), "time="), "line: %s", sc.Text())
			}
			assert.Greater(t, lines, 1, "flowd logged:\n%s", p2.log(t))
		})
	}
}

// startBinaryWithLog starts flowd again in prev's directory, appending to
// prev's stderr file (same inode).
func startBinaryWithLog(t *testing.T, prev *daemonProc, extraEnv []string) *daemonProc {
	t.Helper()
	p := &daemonProc{dir: prev.dir, stateDir: prev.stateDir, socket: prev.socket, logPath: prev.logPath, waited: make(chan error, 1)}
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	defer logf.Close()
	p.run(t, flowdBinary(t), logf, extraEnv)
	return p
}

// -version says which build this is: a module version, or the commit a
// checkout was built from; never Go's placeholder "(devel)".
func TestBinaryVersion(t *testing.T) {
	p := startBinary(t, nil, "-version")
	require.NoError(t, p.wait(t))
	out := strings.TrimSpace(p.log(t))
	assert.True(t, strings.HasPrefix(out, "flowd "), out)
	assert.NotContains(t, out, "(devel)")
	assert.NotEqual(t, "flowd", out)
	t.Log(out)
}

// Config errors send the user to flowd -help-config: it must print the
// reference, covering every setting, from the binary alone.
func TestBinaryHelpConfigPrintsTheReference(t *testing.T) {
	p := startBinary(t, nil, "-help-config")
	require.NoError(t, p.wait(t))
	out := p.log(t)
	assert.Contains(t, out, "# Configuring flowd")
	assert.Contains(t, out, "[providers.github]", "the example file is there too")
	for _, key := range config.SettingNames() {
		assert.True(t, strings.Contains(out, "`"+key+"`"), "the reference documents %s", key)
	}
}

// socketGet GETs path on flowd's socket and decodes the JSON body.
func socketGet(t *testing.T, socket, path string, out any) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	r, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://flowd" + path)
	require.NoError(t, err)
	defer r.Body.Close()
	require.NoError(t, json.NewDecoder(r.Body).Decode(out))
}

func providerNames(t *testing.T, socket string) []string {
	var pr wire.ProvidersResponse
	socketGet(t, socket, "/v1/providers", &pr)
	var out []string
	for _, p := range pr.Providers {
		out = append(out, p.Name)
	}
	return out
}

// SIGHUP applies an edited config to the running flowd, and an invalid
// edit is refused in the log (file, field, reason) with the running config
// kept; the process lives on either way (SIGHUP's default is to kill it).
func TestBinaryReloadsOnSIGHUP(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.toml")
	provider := func(name string) string {
		return fmt.Sprintf("[providers.%s]\nauth_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\nclient_id = \"c\"\n", name)
	}
	require.NoError(t, os.WriteFile(cfg, []byte(provider("one")), 0o600))
	p := startBinary(t, nil, "-config", cfg)
	p.waitReady(t)
	require.Equal(t, []string{"one"}, providerNames(t, p.socket))

	require.NoError(t, os.WriteFile(cfg, []byte(provider("one")+provider("two")), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return len(providerNames(t, p.socket)) == 2 }, 20*time.Second, 20*time.Millisecond,
		"SIGHUP did not apply the new config:\n%s", p.log(t))
	assert.Contains(t, p.log(t), "config reloaded")

	require.NoError(t, os.WriteFile(cfg, []byte(provider("one")+"[providers.bad]\nclient_id = \"x\"\nscopes = \"repo\"\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.log(t), "config reload refused") }, 20*time.Second, 20*time.Millisecond,
		"no refusal in the log:\n%s", p.log(t))
	assert.Contains(t, p.log(t), cfg)
	assert.Contains(t, p.log(t), "providers.bad.scopes: expected a list")
	assert.Equal(t, []string{"one", "two"}, providerNames(t, p.socket), "the running config stays")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t))
}

// The README's recipe: `flowd &` in an interactive shell, then flowctl in
// the foreground. flowd's INFO lines must not land in that terminal; a
// warning still does. script(1) gives the shell a real terminal with job
// control, so flowd is in a background process group as it is for a user.
func TestBinaryQuietInTheBackgroundOnATerminal(t *testing.T) {
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Skip("needs script(1) (util-linux) to give a shell a terminal")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash for an interactive shell with job control")
	}
	bin := flowdBinary(t)
	dir, err := os.MkdirTemp("", "fdq")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	recipe := filepath.Join(dir, "recipe.sh")
	require.NoError(t, os.WriteFile(recipe, []byte(fmt.Sprintf(`set -m
%[1]s -state-dir %[2]s/st -socket %[2]s/s -listen 127.0.0.1:0 &
for i in $(seq 100); do [ -S %[2]s/s ] && break; sleep 0.1; done
echo FOREGROUND-OUTPUT
kill -TERM %%1; wait
`, bin, dir)), 0o600))
	cmd := exec.Command(scriptBin, "-q", "-c", bash+" --norc --noprofile -i "+recipe, "/dev/null")
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "TERM=dumb"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "FOREGROUND-OUTPUT")
	require.NoFileExists(t, filepath.Join(dir, "s"), "flowd did not stop:\n%s", out)
	assert.NotContains(t, string(out), "flowd ready", "INFO lines in the user's terminal")
	assert.NotContains(t, string(out), "level=INFO")
}
