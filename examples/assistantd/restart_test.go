package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/internal/syncbuf"
)

// The real binary on a bbolt file, killed with SIGKILL between the start
// and the redirect: the flow outlives the process, the redirect delivered
// to the restarted daemon completes it, and the token route serves the
// token.
func TestRealBinarySurvivesKillMidFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "assistantd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // the daemon listens here, run after run
	prov := oauthtest.New(t, oauthtest.Options{})
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "-db", filepath.Join(dir, "a.db"), "-addr", addr, "-provider", "test",
			"-auth-url", prov.AuthURL, "-token-url", prov.TokenURL, "-issuer", prov.Issuer,
			"-client-id", prov.ClientID, "-auth-method", prov.AuthMethod)
		cmd.Env = append(os.Environ(), "ASSISTANTD_API_KEY="+testKey, "ASSISTANTD_CLIENT_SECRET="+prov.ClientSecret)
		logs := &syncbuf.Buffer{}
		cmd.Stderr = logs
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		require.Eventually(t, func() bool { return strings.Contains(logs.String(), "serving on") }, 30*time.Second, 20*time.Millisecond,
			"assistantd did not start: %s", logs)
		return cmd
	}
	base := "http://" + addr

	cmd := run()
	code, started, body := call(t, "POST", base+"/connect/test", testKey)
	require.Equal(t, http.StatusCreated, code, body)
	state := started["state"].(string)
	redirect := prov.Redirect(t, started["auth_url"].(string))
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	run()
	code, status, _ := call(t, "GET", base+"/connect/"+state+"?wait=0s", testKey)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "awaiting_callback", status["status"], "the flow outlived the kill")

	code, _, page := call(t, "GET", redirect, "")
	require.Equal(t, http.StatusOK, code, page)
	code, status, _ = call(t, "GET", base+"/connect/"+state, testKey)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "complete", status["status"])
	code, tok, body := call(t, "GET", base+"/token/test", testKey)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, prov.Issued()[0], tok["access_token"])
	assert.Equal(t, 1, prov.Calls(), "one code, redeemed once")
}
