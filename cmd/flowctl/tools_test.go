package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

// asFlowctlEnv makes this test binary run as flowctl, so real git and
// kubectl can call it as their helper (TestMain). A FLOWD_TEST_ knob: the
// hermetic environment keeps it.
const asFlowctlEnv = "FLOWD_TEST_AS_FLOWCTL"

// flowctlExe is this test binary, which runs as flowctl with asFlowctlEnv set.
func flowctlExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return exe
}

// gitEnv is an environment in which git reads no user or system config
// and never prompts.
func gitEnv(t *testing.T) []string {
	home := t.TempDir()
	return append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=", asFlowctlEnv+"=1")
}

// gitCredential runs real git's credential command (fill, approve,
// reject) with flowctl credential as the only helper.
func gitCredential(t *testing.T, socket, op, input string, extra ...string) (string, string, error) {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	helper := fmt.Sprintf(`!%q --socket %q credential %s`, flowctlExe(t), socket, strings.Join(extra, " "))
	cmd := exec.Command(git, "-c", "credential.helper=", "-c", "credential.helper="+helper, "credential", op)
	cmd.Env = gitEnv(t)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// git's own credential fill, with flowctl as its helper, gets a fresh
// token from flowd as the password; the URL's username picks the account;
// unmapped hosts get nothing from flowctl; approve and reject (store,
// erase) change nothing.
func TestGitCredentialHelper(t *testing.T) {
	f := newFakeFlowd(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	f.setToken("github/octocat", wire.TokenResponse{Provider: "github", Account: "octocat", AccessToken: "gho_0CT0CAT", Expiry: exp})
	f.setToken("gitlab", wire.TokenResponse{Provider: "gitlab", AccessToken: "glpat_L4B"})
	f.setToken("forgejo", wire.TokenResponse{Provider: "forgejo", AccessToken: "fj_F0RG3"})

	out, stderr, err := gitCredential(t, f.socket, "fill", "protocol=https\nhost=github.com\npath=octo/repo.git\n\n")
	require.NoError(t, err, "git credential fill: %s", stderr)
	assert.Contains(t, out, "username=octocat\n", "the account is the username")
	assert.Contains(t, out, "password=gho_0CT0CAT\n")

	out, stderr, err = gitCredential(t, f.socket, "fill", "protocol=https\nhost=gitlab.com\n\n")
	require.NoError(t, err, "git credential fill: %s", stderr)
	assert.Contains(t, out, "username=oauth2\n", "GitLab wants oauth2 as the username of an OAuth token")
	assert.Contains(t, out, "password=glpat_L4B\n")

	out, stderr, err = gitCredential(t, f.socket, "fill", "protocol=https\nhost=git.example.com\n\n", "--host", "git.example.com=forgejo")
	require.NoError(t, err, "a --host mapping: %s", stderr)
	assert.Contains(t, out, "password=fj_F0RG3\n")

	f.setToken("github/hubot", wire.TokenResponse{Provider: "github", Account: "hubot", AccessToken: "gho_HUB0T"})
	out, stderr, err = gitCredential(t, f.socket, "fill", "protocol=https\nhost=github.com\nusername=hubot\n\n")
	require.NoError(t, err, "git credential fill: %s", stderr)
	assert.Contains(t, out, "password=gho_HUB0T\n", "https://hubot@github.com/... picks hubot's token")
	f.mu.Lock()
	assert.Equal(t, "account=hubot", f.tokenQs[len(f.tokenQs)-1])
	f.mu.Unlock()

	_, stderr, err = gitCredential(t, f.socket, "fill", "protocol=https\nhost=github.com\n\n")
	assert.Error(t, err, "two accounts and no username: git gets no password")
	assert.Contains(t, stderr, "hubot, octocat", "the error names the accounts")

	f.mu.Lock()
	calls := len(f.tokenQs)
	f.mu.Unlock()
	out, _, err = gitCredential(t, f.socket, "fill", "protocol=https\nhost=example.org\n\n")
	assert.Error(t, err, "an unmapped host: flowctl answers nothing and git, which may not prompt, fails")
	assert.NotContains(t, out, "password=")
	_, _, err = gitCredential(t, f.socket, "fill", "protocol=http\nhost=github.com\n\n")
	assert.Error(t, err, "no token over plain http")
	f.mu.Lock()
	assert.Equal(t, calls, len(f.tokenQs), "neither asked flowd")
	f.mu.Unlock()

	for _, op := range []string{"approve", "reject"} {
		_, stderr, err := gitCredential(t, f.socket, op, "protocol=https\nhost=github.com\nusername=octocat\npassword=gho_0CT0CAT\n\n")
		require.NoError(t, err, "git credential %s: %s", op, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	assert.Len(t, f.tokens, 4, "store and erase change nothing in flowd")
	assert.Empty(t, f.removed)
}

// token --format kubectl prints a client.authentication.k8s.io/v1
// ExecCredential with the token and its expiry.
func TestTokenFormatKubectl(t *testing.T) {
	f := newFakeFlowd(t)
	exp := time.Date(2031, 5, 6, 7, 8, 9, 500, time.UTC)
	f.setToken("dex", wire.TokenResponse{Provider: "dex", AccessToken: "k8s-T0KEN", Expiry: exp})
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "token", "dex", "--format", "kubectl"), c.stderr.String())
	var cred struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Status     struct {
			Token               string `json:"token"`
			ExpirationTimestamp string `json:"expirationTimestamp"`
		} `json:"status"`
	}
	dec := json.NewDecoder(strings.NewReader(c.stdout.String()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&cred), c.stdout.String())
	assert.Equal(t, "client.authentication.k8s.io/v1", cred.APIVersion)
	assert.Equal(t, "ExecCredential", cred.Kind)
	assert.Equal(t, "k8s-T0KEN", cred.Status.Token)
	assert.Equal(t, "2031-05-06T07:08:09Z", cred.Status.ExpirationTimestamp, "RFC 3339, UTC, whole seconds")

	c = newCLI("")
	assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "token", "dex", "--format", "yaml"))
}

// Real kubectl runs flowctl as its exec credential plugin and sends the
// token to the API server.
func TestKubectlUsesExecCredential(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; TestTokenFormatKubectl checks the ExecCredential's fields")
	}
	f := newFakeFlowd(t)
	f.setToken("dex", wire.TokenResponse{Provider: "dex", AccessToken: "k8s-T0KEN", Expiry: time.Now().Add(time.Hour)})
	var mu sync.Mutex
	var got []string
	// TLS: kubectl sends no exec credential to a plain-http server.
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer k8s-T0KEN" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte("flowd-ok"))
	}))
	defer api.Close()
	cfg := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: flowd
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: %q
      args: ["--socket", %q, "token", "dex", "--format", "kubectl"]
      env: [{name: %s, value: "1"}]
      interactiveMode: Never
contexts:
- name: fake
  context: {cluster: fake, user: flowd}
current-context: fake
`, api.URL, flowctlExe(t), f.socket, asFlowctlEnv)
	require.NoError(t, os.WriteFile(cfg, []byte(kc), 0o600))
	cmd := exec.Command(kubectl, "--kubeconfig", cfg, "--request-timeout", "20s", "get", "--raw", "/flowd-check")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	mu.Lock()
	defer mu.Unlock()
	require.NoError(t, err, "kubectl: %s (Authorization headers seen: %q)", out, got)
	assert.Equal(t, "flowd-ok", strings.TrimSpace(string(out)))
	assert.Contains(t, got, "Bearer k8s-T0KEN")
}

// exec puts each token in its variable and passes the command's exit code
// on; a token that cannot be had stops the command from running.
func TestExecRunsWithTokens(t *testing.T) {
	f := newFakeFlowd(t)
	f.setToken("github/octocat", wire.TokenResponse{Provider: "github", Account: "octocat", AccessToken: "gho_0CT0CAT"})
	f.setToken("github/hubot", wire.TokenResponse{Provider: "github", Account: "hubot", AccessToken: "gho_HUB0T"})
	f.setToken("google", wire.TokenResponse{Provider: "google", AccessToken: "ya29.G00GLE"})

	c := newCLI("")
	code := c.run(testCtx(t), f.socket, "exec", "--env", "GH_TOKEN=github:hubot", "--env", "G=google", "--",
		"sh", "-c", `printf '%s %s' "$GH_TOKEN" "$G"; exit 7`)
	assert.Equal(t, 7, code, c.stderr.String())
	assert.Equal(t, "gho_HUB0T ya29.G00GLE", c.stdout.String())

	marker := filepath.Join(t.TempDir(), "ran")
	c = newCLI("")
	code = c.run(testCtx(t), f.socket, "exec", "--env", "GH_TOKEN=github", "--", "touch", marker)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, c.stderr.String(), "hubot, octocat")
	assert.Contains(t, c.stderr.String(), "the command was not run")
	assert.NoFileExists(t, marker)

	c = newCLI("")
	assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "exec", "--env", "1BAD=github", "--", "true"))
	assert.Equal(t, ExitUsage, c.run(testCtx(t), f.socket, "exec", "--", "true"), "no --env")
}

// The real binary replaces itself with the command (exec(2)): the exit
// status is the command's own.
func TestExecReplacesFlowctl(t *testing.T) {
	f := newFakeFlowd(t)
	f.setToken("google", wire.TokenResponse{Provider: "google", AccessToken: "ya29.G00GLE"})
	cmd := exec.Command(flowctlExe(t), "--socket", f.socket, "exec", "--env", "TOKEN=google", "--",
		"sh", "-c", `printf '%s' "$TOKEN"; kill -TERM $$`)
	cmd.Env = append(os.Environ(), asFlowctlEnv+"=1")
	out, err := cmd.Output()
	assert.Equal(t, "ya29.G00GLE", string(out))
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "signal: terminated", ee.Error(), "the command's own end, not flowctl's")
}

// connect --account asks flowd for that account; the "Connected" line
// names the account that signed in, and how to get its token. An
// account_mismatch says what to do instead.
func TestConnectNamesTheAccount(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	done := func(reason states.Reason, d states.Data) func(string) {
		return func(string) {
			go func() {
				f.mu.Lock()
				state := f.order[len(f.order)-1]
				f.mu.Unlock()
				f.finish(state, reason, d)
			}()
		}
	}
	c.browser.onOpen = done(states.Exchanged, states.Data{Account: "octocat", Subject: "583231", GrantedScopes: []string{"repo", "gist"}})
	code := c.run(testCtx(t), f.socket, "connect", "github", "--account", "octocat", "--scopes", "gist")
	require.Equal(t, ExitOK, code, c.stderr.String())
	starts, _, _ := f.snapshot()
	assert.Equal(t, "octocat", starts[0].Account)
	assert.Contains(t, c.stdout.String(), "Connected github as octocat. Granted scopes: repo, gist.")
	assert.Contains(t, c.stdout.String(), "flowctl token github --account octocat")

	c = newCLI("")
	c.browser.onOpen = done(states.AccountMismatch, states.Data{ErrorCode: "account_mismatch", Message: `signed in as "hubot", but this connect was for account "octocat"`})
	code = c.run(testCtx(t), f.socket, "connect", "github", "--account", "octocat")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, c.stderr.String(), `signed in as "hubot"`)
	assert.Contains(t, c.stderr.String(), "To add that account beside the others instead: flowctl connect github")

	f.setToken("github/octocat", wire.TokenResponse{Provider: "github", Account: "octocat", AccessToken: "gho_0CT0CAT"})
	f.setToken("github/hubot", wire.TokenResponse{Provider: "github", Account: "hubot", AccessToken: "gho_HUB0T"})
	c = newCLI("")
	assert.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "token", "github"))
	assert.Contains(t, c.stderr.String(), "hubot, octocat", "several accounts: the error lists them")
	c = newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "token", "github", "--account", "hubot"))
	assert.Equal(t, "gho_HUB0T\n", c.stdout.String())
}

// setToken stores a token in the fake under its lock: the flowctl that
// reads it may be another process, whose request the race detector cannot
// see follow this write.
func (f *fakeFlowd) setToken(key string, tok wire.TokenResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[key] = tok
}
