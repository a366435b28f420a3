package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/client"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

type connectOpts struct {
	account   string
	scopes    []string
	transport string
	noBrowser bool
	// timeout is sent only when --timeout was given: otherwise flowd's
	// configured ttl applies.
	timeout    time.Duration
	timeoutSet bool
	challenge  string
	// clientID, clientSecretEnv and tokenAuth bring the user's own OAuth
	// client. The secret is read from the environment variable named,
	// never taken on the command line, which every local user can read.
	clientID        string
	clientSecretEnv string
	tokenAuth       string
}

func (a *app) connectCmd() *cobra.Command {
	var o connectOpts
	cmd := &cobra.Command{
		Use:   "connect <provider | MCP server URL>",
		Short: "Connect an account: flowd starts the flow, you approve in the browser",
		Long: `connect asks flowd to start a connect flow for the provider, opens the
provider's page in your browser (or prints its URL when there is no display,
over SSH, or with --no-browser), and waits until flowd reports the flow's end.

The browser is opened on a one-time launch link of flowd's, never on the
provider's URL (other users can read a browser opener's command line). It
binds the flow to that browser: a callback from anywhere else changes
nothing. A printed URL opened by hand works too, but is not browser-bound.

Transports say how the provider's redirect gets back to flowd:
  loopback  to flowd's loopback listener (the browser runs on this machine)
  gateway   to a public gateway that relays it to flowd
  manual    you paste the address the browser ended on (SSH, headless)
  device    you enter a code at the provider's page on any device, and flowd
            polls the provider (RFC 8628; the provider must offer it)

Without --transport, connect uses loopback, except over SSH (SSH_CONNECTION or
SSH_TTY set), where a redirect to 127.0.0.1 cannot reach this flowd: it then
uses device when the provider offers it, else manual, and says so.

Ctrl+C cancels the flow in flowd and exits 130. With --no-browser --json it
prints {state, auth_url, expires_at, ...} at once and exits 0, so a script can
do the browser part and then run: flowctl wait <state>. With the device
transport --json alone prints {state, user_code, verification_uri, expires_at,
transport, ...} at once: flowd polls, and flowctl wait <state> re-attaches.

` + exitCodesHelp,
		Example: `  flowctl connect github
  flowctl connect github                           # again, signed in as another user: a second account
  flowctl connect github --account octocat --scopes gist   # step up: asks for gist and what octocat has
  flowctl connect google --scopes openid,email,profile
  flowctl connect github --transport manual        # over SSH: paste the final URL
  flowctl connect github --transport device        # enter a code on any device
  flowctl connect github --no-browser --json       # script the browser part
  flowctl connect https://mcp.example.com/mcp      # an MCP server: discovery, registration, resource-bound token
  MY_SECRET=... flowctl connect github --client-id Iv1.abc --client-secret-env MY_SECRET   # your own OAuth app`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.timeoutSet = cmd.Flags().Changed("timeout")
			return a.connect(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.account, "account", "", "the account to connect again (a reconnect or a scope step-up); signing in as another fails. Default: whichever account you sign in with, added beside any already connected")
	f.StringSliceVar(&o.scopes, "scopes", nil, "scopes to request, comma-separated, on top of those the account was already granted (default: the provider's configured scopes)")
	f.StringVar(&o.transport, "transport", "", "how the redirect reaches flowd: loopback, gateway, manual or device (default loopback; over SSH device or manual)")
	f.BoolVar(&o.noBrowser, "no-browser", false, "print the URL instead of opening a browser")
	f.DurationVar(&o.timeout, "timeout", 0, "how long the flow waits for your approval, like 10m (default: flowd's configured ttl, 5m unless set)")
	f.StringVar(&o.challenge, "challenge", "", "for an MCP server URL: the WWW-Authenticate header it answered with (a 403 insufficient_scope steps up)")
	f.StringVar(&o.clientID, "client-id", "", "connect with your own OAuth app registered at the provider instead of flowd's configured client; its refreshes and disconnect use it too")
	f.StringVar(&o.clientSecretEnv, "client-secret-env", "", "the environment variable holding --client-id's secret (never pass a secret on the command line); omit for a public client")
	f.StringVar(&o.tokenAuth, "token-auth", "", "how --client-id authenticates at the token endpoint: none, client_secret_basic or client_secret_post (default: none without a secret; with one, the provider's configured method when it sends a secret, else client_secret_basic)")
	return cmd
}

func (a *app) connect(ctx context.Context, provider string, o connectOpts) error {
	if o.transport != "" && !states.Transport(o.transport).Valid() {
		return usagef("unknown transport %q: use loopback, gateway, manual or device", o.transport)
	}
	ttl := ""
	if o.timeoutSet {
		if o.timeout <= 0 {
			return usagef("--timeout must be positive, like 5m")
		}
		ttl = o.timeout.String()
	}
	secret := ""
	if o.clientSecretEnv != "" {
		if o.clientID == "" {
			return usagef("--client-secret-env needs --client-id")
		}
		if secret = a.getenv(o.clientSecretEnv); secret == "" {
			return usagef("--client-secret-env %s: the variable is unset or empty; export the client secret in it", o.clientSecretEnv)
		}
	}
	if o.tokenAuth != "" && o.clientID == "" {
		return usagef("--token-auth needs --client-id")
	}
	cl := a.client()
	defer cl.Close()
	// Without --timeout no ttl is sent: flowd's configured ttl applies, and
	// a device flow lives as long as the provider's device code.
	transport := a.chooseTransport(ctx, cl, provider, o, a.info())
	st, err := cl.Start(ctx, wire.StartRequest{
		Provider:  provider,
		Account:   o.account,
		Scopes:    splitList(o.scopes),
		Challenge: o.challenge,
		Transport: transport,
		TTL:       ttl,
		ClientID:  o.clientID, ClientSecret: secret, TokenAuth: o.tokenAuth,
	})
	if err != nil {
		if ctx.Err() != nil {
			// Interrupted before flowd answered: the flow may exist, but
			// flowctl has no state to cancel; it expires on its own.
			return &exitError{ExitInterrupted, fmt.Errorf("interrupted while starting the flow; if flowd started it, it expires on its own: flowctl list --provider %s", provider)}
		}
		return fmt.Errorf("start connecting %s: %w", provider, err)
	}
	device := st.Transport == string(states.Device)
	if a.json && (o.noBrowser || device) {
		return a.writeJSON(st)
	}

	out := a.info()
	for _, old := range st.Superseded {
		fmt.Fprintf(out, "This connect replaces an earlier one for %s (%s), which flowd has ended.\n", st.Provider, shortID(old))
	}
	manual := st.Transport == string(states.Manual)
	if device {
		showDeviceCode(out, st.Provider, st.UserCode, st.VerificationURI, st.VerificationURIComplete)
	} else {
		a.sendToBrowser(out, st, o.noBrowser)
	}

	var flow wire.Flow
	if device {
		flow, err = a.waitDevice(ctx, cl, st)
	} else if manual {
		flow, err = a.waitManual(ctx, cl, st, out)
	} else {
		var cd *countdown
		if !a.json && a.isTerminal(a.stdout) {
			cd = startCountdown(a.stdout, "Waiting for you to approve in the browser:", "cancels", st.ExpiresAt, a.now, a.tick)
		}
		flow, err = a.waitFlow(ctx, cl, st.State, st.ExpiresAt, cd)
		cd.Stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			return a.cancelInterrupted(cl, st.State)
		}
		return fmt.Errorf("wait for flow %s: %w", shortID(st.State), err)
	}
	return a.reportOutcome(flow, st.AuthURL)
}

// sendToBrowser opens the flow's one-time launch link, or prints the
// authorization URL when no browser would be seen (--no-browser, no
// display, SSH), opening failed, or flowd gave no launch link.
//
// The opener's command line is readable by every local user (ps), so only
// the launch link ever goes there: it carries no state, no PKCE challenge
// and no provider URL, works once and for seconds, and the browser that
// opens it gets the cookie that binds the flow to it. A printed URL is for
// the user's eyes; a flow finished from it is not bound to a browser.
func (a *app) sendToBrowser(out io.Writer, st wire.StartResponse, noBrowser bool) {
	opened := false
	if !noBrowser && st.LaunchURL != "" && hasDisplay(a.goos, a.getenv) {
		if err := a.browser.Open(st.LaunchURL); err != nil {
			fmt.Fprintf(out, "Could not open a browser (%v).\n", err)
		} else {
			opened = true
		}
	}
	if opened {
		fmt.Fprintf(out, "Opened your browser to connect %s; only that browser can finish this sign-in.\n"+
			"If no browser appeared, open this URL by hand instead (while no browser has opened flowd's launch link,\n"+
			"flowd takes the first callback for it, from any browser):\n\n  %s\n\n", st.Provider, st.AuthURL)
		return
	}
	fmt.Fprintf(out, "Open this URL in a browser to connect %s:\n\n  %s\n\n", st.Provider, st.AuthURL)
	if st.Transport == string(states.Loopback) {
		fmt.Fprintf(out, "This sign-in is not bound to a browser: flowd takes the first callback that comes back for it.\n\n")
	}
}

// waitFlow long-polls flowd until the flow is terminal. A flowd that goes
// away is asked again every retryEvery until the flow's deadline: the flow
// is in flowd's log and survives a restart. cd, when not nil, is the live
// line messages are printed above.
func (a *app) waitFlow(ctx context.Context, cl *client.Client, state string, deadline time.Time, cd *countdown) (wire.Flow, error) {
	giveUp := deadline.Add(a.deadlineGrace)
	lost := false
	for {
		remaining := giveUp.Sub(a.now())
		if remaining <= 0 {
			f, err := cl.Status(ctx, state, 0)
			if err != nil {
				return wire.Flow{}, err
			}
			if f.Terminal {
				return f, nil
			}
			return f, fmt.Errorf("flowd has not ended the flow although its deadline passed at %s; check flowd's log, then run: flowctl inspect %s", deadline.Local().Format(time.TimeOnly), state)
		}
		f, err := cl.Status(ctx, state, min(a.pollWait, remaining))
		if err == nil {
			if lost {
				cd.Say(a.stderr, "flowd is back.")
				lost = false
			}
			if f.Terminal {
				return f, nil
			}
			continue
		}
		if ctx.Err() != nil {
			return wire.Flow{}, ctx.Err()
		}
		var unreach *client.UnreachableError
		// A flowd shutting down answers 503 before it goes away: the same
		// story as an unreachable one.
		if !errors.As(err, &unreach) && !client.HasCode(err, wire.CodeUnavailable) {
			return wire.Flow{}, err
		}
		if !lost {
			cd.Say(a.stderr, fmt.Sprintf("Lost flowd at %s; the flow is kept in flowd's log, so flowctl keeps asking until the deadline.", cl.Socket()))
			lost = true
		}
		select {
		case <-ctx.Done():
			return wire.Flow{}, ctx.Err()
		case <-time.After(a.retryEvery):
		}
	}
}

// waitManual waits for the flow while reading what the user pastes: the
// URL the browser ended on, its query string, or the bare code. The flow
// may still complete without a paste (the browser may reach flowd's
// loopback listener after all), so the long poll runs alongside the prompt.
func (a *app) waitManual(ctx context.Context, cl *client.Client, st wire.StartResponse, out io.Writer) (wire.Flow, error) {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		f   wire.Flow
		err error
	}
	waited := make(chan result, 1)
	go func() {
		f, err := a.waitFlow(wctx, cl, st.State, st.ExpiresAt, nil)
		waited <- result{f, err}
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(a.stdin)
		sc.Buffer(make([]byte, 0, 4096), wire.MaxQueryBytes*2)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-wctx.Done():
				return
			}
		}
	}()

	fmt.Fprintf(out, "After you approve, the browser goes to %s; that page may not load, which is fine.\n", st.RedirectURI)
	prompt := func() {
		fmt.Fprintf(out, "Paste the address the browser ended on (or just the code) and press Enter (%s left): ", formatLeft(st.ExpiresAt.Sub(a.now())))
	}
	prompt()
	for {
		select {
		case r := <-waited:
			fmt.Fprintln(out)
			return r.f, r.err
		case line, ok := <-lines:
			if !ok {
				lines = nil // stdin closed: keep waiting for the callback to reach flowd some other way
				fmt.Fprintln(out, "\nInput closed; still waiting for the callback to reach flowd.")
				continue
			}
			p, err := parsePaste(line)
			if errors.Is(err, errNothingPasted) {
				prompt()
				continue
			}
			if err != nil {
				fmt.Fprintln(out, err)
				prompt()
				continue
			}
			if p.State != "" && p.State != st.State {
				fmt.Fprintf(out, "That address belongs to another flow (state %s), not this one (%s): paste the address from the tab this connect opened.\n", shortID(p.State), shortID(st.State))
				prompt()
				continue
			}
			if p.State == "" && a.issuerRequired(ctx, cl, st.State) {
				// A bare code has lost the redirect's iss, and flowd would
				// end the flow issuer_mismatch: ask for the whole address.
				fmt.Fprintln(out, "This provider names itself in the redirect (iss, RFC 9207), which a bare code does not carry: paste the whole address the browser ended on.")
				prompt()
				continue
			}
			resp, err := cl.Callback(ctx, wire.CallbackRequest{
				State:            st.State,
				Code:             p.Code,
				Error:            p.Error,
				ErrorDescription: p.ErrorDescription,
				Iss:              p.Iss,
			})
			if err != nil {
				if ctx.Err() != nil {
					return wire.Flow{}, ctx.Err()
				}
				// The flow may have ended meanwhile (the waiter reports
				// that); otherwise the user can paste again.
				fmt.Fprintf(out, "flowd did not take it: %v\n", err)
				prompt()
				continue
			}
			if resp.Flow.Terminal {
				return resp.Flow, nil
			}
			fmt.Fprintln(out, "flowd took it; waiting for the flow to finish.")
		}
	}
}

// issuerRequired reports whether flowd refuses the flow's callback without
// iss. If flowd cannot say, it is false: flowd still checks.
func (a *app) issuerRequired(ctx context.Context, cl *client.Client, state string) bool {
	f, err := cl.Status(ctx, state, 0)
	return err == nil && f.IssuerRequired
}

// cancelInterrupted cancels the flow in flowd after Ctrl+C. The context
// is fresh: the command's own is already canceled.
func (a *app) cancelInterrupted(cl *client.Client, state string) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cancelTimeout)
	defer cancel()
	f, err := cl.Cancel(ctx, state)
	if err != nil {
		return &exitError{ExitInterrupted, fmt.Errorf("interrupted, but canceling flow %s in flowd failed: %w", shortID(state), err)}
	}
	if a.json {
		if err := a.writeJSON(f); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stderr, "\nInterrupted: flow %s is canceled in flowd.\n", shortID(state))
	return silentExit(ExitInterrupted)
}

// connectResult is connect's --json output: the flow as it ended, and the
// URL the user was sent to.
type connectResult struct {
	wire.Flow
	AuthURL string `json:"auth_url,omitempty"`
}

// reportOutcome prints how a flow ended and returns the exit code as an error.
func (a *app) reportOutcome(f wire.Flow, authURL string) error {
	if a.json {
		if err := a.writeJSON(connectResult{Flow: f, AuthURL: authURL}); err != nil {
			return err
		}
	} else if f.Status == string(states.Complete) {
		msg := "Connected " + f.Provider
		if f.Account != "" {
			msg += " as " + f.Account
		}
		msg += "."
		if len(f.GrantedScopes) > 0 {
			msg += " Granted scopes: " + strings.Join(f.GrantedScopes, ", ") + "."
		}
		fmt.Fprintln(a.stdout, msg)
		if f.Account != "" {
			fmt.Fprintf(a.stdout, "Get a token with: flowctl token %s --account %s\n", f.Provider, shellQuote(f.Account))
		} else {
			fmt.Fprintf(a.stdout, "Get a token with: flowctl token %s\n", f.Provider)
		}
	} else {
		fmt.Fprintln(a.stderr, failureText(f))
	}
	if f.Status == string(states.Complete) {
		return nil
	}
	return silentExit(ExitFailed)
}

// failureText says why a flow ended without a token, with the provider's
// own words when it gave any, and where to look next.
func failureText(f wire.Flow) string {
	var b strings.Builder
	why := f.ReasonText
	if why == "" {
		why = f.Status
	}
	fmt.Fprintf(&b, "Connecting %s failed: %s", f.Provider, why)
	if f.Reason != "" {
		fmt.Fprintf(&b, " (%s)", f.Reason)
	}
	b.WriteString(".\n")
	switch states.Reason(f.Reason) {
	case states.IdentityInvalid:
		// flowd's own check failed, not the provider's answer.
		fmt.Fprintf(&b, "Why: %s\n", f.Message)
		b.WriteString("Any earlier connection of the account is kept. Check the provider's issuer and client id in flowd's config, then connect again.\n")
	case states.AccountMismatch:
		fmt.Fprintf(&b, "Why: %s\n", f.Message)
		fmt.Fprintf(&b, "To add that account beside the others instead: flowctl connect %s\n", f.Provider)
	default:
		if f.ErrorCode != "" || f.Message != "" {
			said := f.Message
			if f.ErrorCode != "" && f.Message != "" {
				said = f.ErrorCode + ": " + f.Message
			} else if f.ErrorCode != "" {
				said = f.ErrorCode
			}
			fmt.Fprintf(&b, "The provider said: %s\n", said)
		}
	}
	if f.HTTPStatus != 0 {
		fmt.Fprintf(&b, "The token endpoint answered HTTP %d.\n", f.HTTPStatus)
	}
	fmt.Fprintf(&b, "What happened, step by step: flowctl inspect %s", f.State)
	return b.String()
}

// shortID is the prefix of a state people can type back (flowctl accepts
// unique prefixes); no ellipsis, so it copies cleanly.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// shellQuote quotes s for a command line people copy, when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
