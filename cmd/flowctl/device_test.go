package main

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

const (
	fakeUserCode        = "WDJB-MJHT"
	fakeVerificationURI = "https://github.com/login/device"
)

// withDevice gives the fake's github provider a device endpoint.
func withDevice(f *fakeFlowd) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.providers[0].DeviceAuthURL = "https://github.com/login/device/code"
}

// --transport device shows the code and where to enter it, and waits for
// flowd (which polls) to end the flow.
func TestConnectDeviceShowsCodeAndWaits(t *testing.T) {
	f := newFakeFlowd(t)
	withDevice(f)
	f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "device"), c.stderr.String())
	out := c.stdout.String()
	assert.Contains(t, out, "open this page on any device:\n\n  "+fakeVerificationURI)
	assert.Contains(t, out, "enter the code:\n\n  "+fakeUserCode)
	assert.Contains(t, out, "Connected github.")
	assert.Empty(t, c.browser.urls(), "nothing to open: the user goes to the page on their own device")
	starts, _, _ := f.snapshot()
	assert.Equal(t, "device", starts[0].Transport)
	assert.Empty(t, starts[0].TTL, "without --timeout the flow lives as long as the provider's device code")
}

// --json with the device transport prints at once what a script needs,
// and flowctl wait re-attaches, showing the code again.
func TestConnectDeviceJSONAtOnceAndWaitReattaches(t *testing.T) {
	f := newFakeFlowd(t)
	withDevice(f)
	c := newCLI("")
	require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "device", "--json"))
	m := oneJSON(t, c.stdout.String())
	for _, k := range []string{"state", "user_code", "verification_uri", "expires_at", "transport"} {
		assert.NotEmpty(t, m[k], k)
	}
	assert.Equal(t, "device", m["transport"])
	assert.Equal(t, fakeUserCode, m["user_code"])
	state := m["state"].(string)
	assert.Equal(t, "awaiting_callback", f.flow(state).Status, "flowd polls; nothing left to do here")

	w := newCLI("")
	go func() {
		time.Sleep(100 * time.Millisecond) // the user enters the code; flowd's next poll completes the flow
		f.finish(state, states.Exchanged, states.Data{})
	}()
	require.Equal(t, ExitOK, w.run(testCtx(t), f.socket, "wait", state), w.stderr.String())
	assert.Contains(t, w.stdout.String(), "enter the code:\n\n  "+fakeUserCode)
	assert.Contains(t, w.stdout.String(), "Connected github.")
}

// A provider without a device endpoint: flowd's refusal says what to do.
func TestConnectDeviceNotSupported(t *testing.T) {
	f := newFakeFlowd(t)
	c := newCLI("")
	assert.Equal(t, ExitFailed, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "device"))
	assert.Contains(t, c.stderr.String(), "no device authorization endpoint")
}

// Over SSH (SSH_CONNECTION or SSH_TTY) with no --transport, connect says
// plainly why loopback cannot work and picks what does: device when the
// provider offers it, else manual paste, naming port forwarding as the
// alternative. The real environment is read (os.Getenv), set and unset
// per test with t.Setenv.
func TestConnectOverSSHPicksWhatWorks(t *testing.T) {
	for _, tc := range []struct {
		name, env   string
		device      bool
		want        string
		wantMessage string
	}{
		{"SSH_CONNECTION, device offered", "SSH_CONNECTION", true, "device", "Using the device transport"},
		{"SSH_TTY, device offered", "SSH_TTY", true, "device", "Using the device transport"},
		{"SSH_CONNECTION, no device endpoint", "SSH_CONNECTION", false, "manual", "Using the manual transport"},
		{"not over SSH", "", true, "loopback", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSH_CONNECTION", "")
			t.Setenv("SSH_TTY", "")
			os.Unsetenv("SSH_CONNECTION")
			os.Unsetenv("SSH_TTY")
			t.Setenv("DISPLAY", ":0")
			if tc.env != "" {
				t.Setenv(tc.env, "10.0.0.1 5555 10.0.0.2 22")
			}
			f := newFakeFlowd(t)
			if tc.device {
				withDevice(f)
			}
			f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
			c := newCLI("")
			c.d.getenv = os.Getenv
			require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github"), c.stderr.String())
			starts, _, _ := f.snapshot()
			require.Len(t, starts, 1)
			assert.Equal(t, tc.want, starts[0].Transport)
			out := c.stdout.String()
			if tc.wantMessage == "" {
				assert.NotContains(t, out, "SSH")
				return
			}
			assert.Contains(t, out, "You are connected over SSH ("+tc.env+" is set)")
			assert.Contains(t, out, tc.wantMessage)
			assert.Contains(t, out, "ssh -L 8085:127.0.0.1:8085")
		})
	}
	t.Run("explicit loopback over SSH is kept, with a warning", func(t *testing.T) {
		t.Setenv("SSH_CONNECTION", "x")
		f := newFakeFlowd(t)
		withDevice(f)
		f.onStart = func(st wire.StartResponse) { f.finish(st.State, states.Exchanged, states.Data{}) }
		c := newCLI("")
		c.d.getenv = os.Getenv
		require.Equal(t, ExitOK, c.run(testCtx(t), f.socket, "connect", "github", "--transport", "loopback"))
		starts, _, _ := f.snapshot()
		assert.Equal(t, "loopback", starts[0].Transport)
		assert.Contains(t, c.stdout.String(), "ssh -L 8085:127.0.0.1:8085")
		assert.Contains(t, c.stdout.String(), "--transport device")
	})
}
