package main

import (
	"bufio"
	"fmt"
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

	"flowd.local/flowd/cmd/internal/config"
	"flowd.local/flowd/persist"
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
	p.cmd = exec.Command(bin, append([]string{"-state-dir", p.stateDir, "-socket", p.socket, "-listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append([]string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "PATH=" + os.Getenv("PATH")}, extraEnv...)
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
	return p
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
	p.cmd = exec.Command(flowdBinary(t), "-state-dir", p.stateDir, "-socket", p.socket, "-listen", "127.0.0.1:0")
	p.cmd.Env = append([]string{"HOME=" + p.dir, "XDG_CONFIG_HOME=" + filepath.Join(p.dir, "config"), "PATH=" + os.Getenv("PATH")}, extraEnv...)
	p.cmd.Stderr = logf
	require.NoError(t, p.cmd.Start())
	go func() { p.waited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.waited
		}
	})
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
