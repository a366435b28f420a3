package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deviceStarted is what `flowctl connect --transport device --json` prints at once.
type deviceStarted struct {
	State                   string    `json:"state"`
	Transport               string    `json:"transport"`
	UserCode                string    `json:"user_code"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete"`
	ExpiresAt               time.Time `json:"expires_at"`
}

// The device grant end to end with the real binaries and Dex, and flowd
// killed with SIGKILL while the user has the code: the user enters it at
// Dex while flowd is down, flowd comes back, resumes polling on the
// schedule in its log, and `flowctl wait` sees the flow complete with a
// token Dex accepts. The device code and user code never reach flowd's
// files, output or export.
func TestFlowdDeviceSurvivesSIGKILL(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	var st deviceStarted
	res := r.flowctlJSON(&st, "connect", "dex-device", "--transport", "device", "--json")
	require.Equal(t, 0, res.code, "connect --transport device --json exits 0 at once: %s", res.stderr)
	r.states = append(r.states, st.State)
	assert.Equal(t, "device", st.Transport)
	assert.Equal(t, r.dex.Issuer+"/device", st.VerificationURI)
	require.NotEmpty(t, st.UserCode)
	assert.False(t, st.ExpiresAt.IsZero())

	r.kill() // SIGKILL while the user has the code
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, r.dex.Browser().ApproveDevice(ctx, st.VerificationURI, st.UserCode), "the user enters the code at Dex")
	r.start()

	f, res := r.wait(st.State)
	require.Equal(t, 0, res.code, "wait: %s", res.stderr)
	assert.Equal(t, "complete", f.Status)
	assert.True(t, f.TokenStored)

	var tok struct {
		AccessToken string `json:"access_token"`
	}
	res = r.flowctlJSON(&tok, "token", "dex-device", "--json")
	require.Equal(t, 0, res.code, "token: %s", res.stderr)
	_, err := r.dex.Userinfo(ctx, tok.AccessToken)
	require.NoError(t, err, "dex accepts the device flow's token")

	hist := r.flowctl(nil, "inspect", st.State)
	assert.Contains(t, hist.stdout, "device_authorized")
	assert.Contains(t, hist.stdout, "exchange_succeeded")
	assert.NotContains(t, hist.stdout, "exchange_started", "a device flow polls; it starts no exchange")

	export := r.export()
	assert.NotContains(t, export, st.UserCode, "the user code is sealed, not in the log")
	assert.NotContains(t, r.out.String(), st.UserCode, "nor in flowd's output")
	_ = filepath.WalkDir(r.stateHome, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			data, _ := os.ReadFile(path)
			assert.False(t, strings.Contains(string(data), st.UserCode), "user code in %s", path)
		}
		return nil
	})
	// The device code went through the recording token proxy with every
	// poll; the rig's scan checks it against every file and output.
	assert.Contains(t, r.dex.Secrets.Kinds(), "device_code")
}

// Over SSH, without --transport, flowctl says why loopback cannot work and
// uses the device transport, which the provider offers.
func TestFlowctlOverSSHDefaultsToDevice(t *testing.T) {
	r := newFlowdRig(t, rigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := execFlowctl(ctx, r, "connect", "dex-device", "--json")
	cmd.Env = append(cmd.Env, "SSH_CONNECTION=10.0.0.1 51000 10.0.0.2 22")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	assert.Contains(t, stderr.String(), "You are connected over SSH (SSH_CONNECTION is set)")
	assert.Contains(t, stderr.String(), "ssh -L 8085:127.0.0.1:8085")
	var st deviceStarted
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &st), "one JSON object: %s", stdout.String())
	r.states = append(r.states, st.State)
	assert.Equal(t, "device", st.Transport)
	assert.NotEmpty(t, st.UserCode)
}
