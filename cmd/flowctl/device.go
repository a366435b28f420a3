package main

import (
	"context"
	"fmt"
	"io"

	"github.com/flowdhq/flowd/cmd/internal/client"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

// overSSH names the variable that says flowctl runs in an SSH session
// (SSH_CONNECTION or SSH_TTY), or "" when it does not.
func overSSH(getenv func(string) string) string {
	for _, k := range []string{"SSH_CONNECTION", "SSH_TTY"} {
		if getenv(k) != "" {
			return k
		}
	}
	return ""
}

// chooseTransport picks the transport of a connect. An explicit --transport
// is kept; over SSH flowctl then only warns when it is loopback. Without
// one, loopback is the default except over SSH, where the browser is on
// another machine and its redirect to 127.0.0.1 never reaches this flowd:
// there the device transport is the default when the provider has a
// device endpoint, else manual paste.
func (a *app) chooseTransport(ctx context.Context, cl *client.Client, provider string, o connectOpts, out io.Writer) string {
	ssh := overSSH(a.getenv)
	forward := "ssh -L 8085:127.0.0.1:8085 <this host>"
	if o.transport != "" {
		if ssh != "" && o.transport == string(states.Loopback) {
			fmt.Fprintf(out, "You are connected over SSH (%s is set): the browser on your own machine can reach flowd's callback at 127.0.0.1:8085 only through a forwarded port (%s). Without one, use --transport device or --transport manual.\n", ssh, forward)
		}
		return o.transport
	}
	if ssh == "" {
		return string(states.Loopback)
	}
	device := false
	if ps, err := cl.Providers(ctx); err == nil {
		for _, p := range ps {
			device = device || (p.Name == provider && p.DeviceAuthURL != "")
		}
	}
	if device {
		fmt.Fprintf(out, "You are connected over SSH (%s is set), so a browser redirect to 127.0.0.1 would not reach flowd here. Using the device transport: you enter a code at %s's page on any device.\n"+
			"(Alternatives: --transport manual to paste the address the browser ends on, or forward the port with %s and use --transport loopback.)\n", ssh, provider, forward)
		return string(states.Device)
	}
	fmt.Fprintf(out, "You are connected over SSH (%s is set), so a browser redirect to 127.0.0.1 would not reach flowd here, and %s has no device authorization endpoint. Using the manual transport: you paste the address the browser ends on.\n"+
		"(Alternative: forward the port with %s and use --transport loopback.)\n", ssh, provider, forward)
	return string(states.Manual)
}

// showDeviceCode tells the user where to enter the code.
func showDeviceCode(out io.Writer, provider, userCode, uri, complete string) {
	fmt.Fprintf(out, "To connect %s, open this page on any device:\n\n  %s\n\nand enter the code:\n\n  %s\n\n", provider, uri, userCode)
	if complete != "" && complete != uri {
		fmt.Fprintf(out, "(or open %s, which has the code in it)\n\n", complete)
	}
}

// waitDevice waits for a device flow while flowd polls the provider; it
// needs nothing from the user here but patience.
func (a *app) waitDevice(ctx context.Context, cl *client.Client, st wire.StartResponse) (wire.Flow, error) {
	var cd *countdown
	if !a.json && a.isTerminal(a.stdout) {
		cd = startCountdown(a.stdout, "Waiting for you to enter the code:", "cancels", st.ExpiresAt, a.now, a.tick)
	}
	f, err := a.waitFlow(ctx, cl, st.State, st.ExpiresAt, cd)
	cd.Stop()
	return f, err
}
