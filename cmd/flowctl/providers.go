package main

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/states"
)

func (a *app) tokenCmd() *cobra.Command {
	var account, format string
	var force bool
	cmd := &cobra.Command{
		Use:   "token <provider | MCP server URL>",
		Short: "Print a valid access token for a connected account",
		Long: `token prints the account's access token and nothing else, so it can be used
in $(...). flowd refreshes it first when it has expired or is about to.
With --json it prints the token with its type, expiry and scopes; the refresh
token never leaves flowd. --format kubectl prints a kubectl exec credential
(client.authentication.k8s.io/v1 ExecCredential) instead. --force refreshes
it although it has not expired, for an API that answered 401 to it.

A provider with several connected accounts needs --account; the error lists
them. With one, it is used.`,
		Example: `  curl -H "Authorization: Bearer $(flowctl token github)" https://api.github.com/user
  flowctl token github --account octocat
  flowctl token https://mcp.example.com/mcp
  flowctl token google --json
  flowctl token github --force     # the API said 401: get a new one
  flowctl token dex --format kubectl      # in a kubeconfig's users[].user.exec`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "raw" && format != "kubectl" {
				return usagef("unknown format %q: use raw or kubectl", format)
			}
			cl := a.client()
			defer cl.Close()
			get := cl.Token
			if force {
				get = cl.ForceRefresh
			}
			tok, err := get(cmd.Context(), args[0], account)
			if err != nil {
				return fmt.Errorf("get a token for %s: %w", accountLabel(args[0], account), err)
			}
			switch {
			case format == "kubectl":
				return a.writeJSON(kubectlCredential(tok))
			case a.json:
				return a.writeJSON(tok)
			}
			fmt.Fprintln(a.stdout, tok.AccessToken)
			return nil
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "the connected account to use (GitHub login, email, ...), when the provider has several")
	cmd.Flags().StringVar(&format, "format", "raw", "raw (the bare token), or kubectl (an ExecCredential for kubectl's exec plugin)")
	cmd.Flags().BoolVar(&force, "force", false, "refresh the token although it has not expired")
	return cmd
}

func (a *app) disconnectCmd() *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:   "disconnect <provider | MCP server URL>",
		Short: "Revoke an account's token and remove it",
		Long: `disconnect asks the provider to revoke the stored tokens (RFC 7009) when it has
a revocation endpoint (revocation_url in the config, or revocation_endpoint in
its discovery metadata), then makes flowd forget them. The local copy is
removed even when the provider has no revocation endpoint or refuses; the
output says which. A provider with several connected accounts needs
--account; the others stay connected.`,
		Example: `  flowctl disconnect github
  flowctl disconnect github --account hubot`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			res, err := cl.Disconnect(cmd.Context(), args[0], account)
			if err != nil {
				return fmt.Errorf("disconnect %s: %w", accountLabel(args[0], account), err)
			}
			if a.json {
				return a.writeJSON(res)
			}
			who := accountLabel(res.Provider, res.Account)
			switch {
			case !res.Removed:
				fmt.Fprintf(a.stdout, "Disconnected %s: flowd no longer holds a token for it.\n", who)
			case res.Revocation == "revoked":
				fmt.Fprintf(a.stdout, "Disconnected %s: the provider revoked the token and flowd no longer holds it.\n", who)
			case res.Revocation == "failed":
				fmt.Fprintf(a.stdout, "Disconnected %s: flowd no longer holds a token for it, but the provider did not revoke it (%s); revoke it in the provider's settings.\n", who, res.RevocationError)
			case res.Revocation == "unsupported":
				fmt.Fprintf(a.stdout, "Disconnected %s: flowd no longer holds a token for it. The provider has no revocation endpoint, so the token stays valid there until it expires; revoke the app's access in the provider's settings to end it now.\n", who)
			default:
				fmt.Fprintf(a.stdout, "Disconnected %s: flowd no longer holds a token for it.\n", who)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "the connected account to disconnect, when the provider has several")
	return cmd
}

// accountLabel names a provider's account for people: "github (octocat)",
// or just "github" when no account is named.
func accountLabel(provider, account string) string {
	if account == "" {
		return provider
	}
	return provider + " (" + account + ")"
}

func (a *app) providersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "providers",
		Short: "List the providers flowd is configured for",
		Long: `providers lists the providers in flowd's config file, with their status,
client id, default scopes, token endpoint auth method (and where it came from:
setting, preset, discovery or default), whether the redirect's iss is required
or checked (RFC 9207), and endpoints. Client secrets are never shown.

A provider configured by OIDC issuer is unavailable while its issuer has not
answered discovery: flowd started without it, retries in the background, and
adds it without a restart once the issuer answers. The reason (the last
discovery error) is printed below the table, and is in --json as unavailable.

MCP servers connected by URL follow (PRESET mcp:<how the client was
registered>, NAME the server's URL).`,
		Example: `  flowctl providers
  flowctl providers --json`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			info, err := cl.ProvidersInfo(cmd.Context())
			if err != nil {
				return fmt.Errorf("list providers: %w", err)
			}
			ps := info.Providers
			if ps == nil {
				ps = []wire.Provider{}
			}
			if a.json {
				info.Providers = ps
				return a.writeJSON(info)
			}
			if len(ps) == 0 {
				fmt.Fprintln(a.stdout, noProvidersMessage(info))
				return nil
			}
			tw := newTable(a.stdout, 2)
			fmt.Fprintln(tw, "NAME\tSTATUS\tPRESET\tCLIENT ID\tSCOPES\tTOKEN AUTH\tISS\tDEVICE\tAUTH URL")
			var down []wire.Provider
			for _, p := range ps {
				preset := p.Preset
				if p.MCP != nil {
					// An MCP server connected by URL: how the client got registered.
					preset = "mcp:" + p.MCP.Registration
				}
				authURL, status := p.AuthURL, cmp.Or(p.Status, wire.ProviderAvailable)
				if p.Unavailable != nil {
					down = append(down, p)
					authURL = "(discovering " + p.Issuer + ")"
				}
				// DEVICE: whether --transport device works (RFC 8628 endpoint configured).
				device := "no"
				if p.DeviceAuthURL != "" {
					device = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, status, dash(preset), dash(p.ClientID), dash(strings.Join(p.Scopes, ",")),
					authMethodText(p), issText(p), device, authURL)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, p := range down {
				u := p.Unavailable
				next := ""
				if !u.NextAttempt.IsZero() {
					next = ", next at " + u.NextAttempt.Local().Format(time.TimeOnly)
				}
				fmt.Fprintf(a.stdout, "\n%s is unavailable since %s (%d discovery attempt(s)%s; flowd keeps retrying and adds it without a restart):\n  %s\n",
					p.Name, u.Since.Local().Format(time.TimeOnly), u.Attempts, next, u.Reason)
			}
			return nil
		},
	}
}

// noProvidersMessage says which file to edit and how to apply it.
func noProvidersMessage(info wire.ProvidersResponse) string {
	switch {
	case info.ConfigFile == "":
		// An older flowd that does not say which file it read.
		return "No providers are configured; add one to flowd's config file (flowd -help-config shows how), then run: flowctl reload"
	case !info.ConfigFileFound:
		return fmt.Sprintf("No providers are configured: flowd found no config file at %s. Create it with a provider (flowd -help-config shows how), then run: flowctl reload", info.ConfigFile)
	}
	return fmt.Sprintf("No providers are configured in %s, the config file flowd read. Add one (flowd -help-config shows how), then run: flowctl reload", info.ConfigFile)
}

func (a *app) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make flowd re-read its config file, without a restart",
		Long: `reload asks flowd to read its config file again and apply it while flows
run (as SIGHUP to flowd does). The whole file is checked first: if it is
invalid, flowd says which file, field and reason, keeps the config it had,
and reload exits 1. Settings that apply only when flowd starts (listen,
socket, state_dir, ...) are named; restart flowd for those.

` + exitCodesHelp,
		Example: `  flowctl reload
  flowctl reload --json`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			res, err := cl.Reload(cmd.Context())
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			if a.json {
				return a.writeJSON(res)
			}
			where := res.ConfigFile
			if !res.ConfigFileFound {
				where += " (no such file: no providers)"
			}
			fmt.Fprintf(a.stdout, "Reloaded %s.\n", where)
			if len(res.Providers) == 0 {
				fmt.Fprintln(a.stdout, "Providers: none.")
			} else {
				fmt.Fprintf(a.stdout, "Providers: %s.\n", strings.Join(res.Providers, ", "))
			}
			for _, c := range []struct {
				what  string
				names []string
			}{{"Added", res.Added}, {"Removed", res.Removed}, {"Changed", res.Changed}} {
				if len(c.names) > 0 {
					fmt.Fprintf(a.stdout, "%s: %s.\n", c.what, strings.Join(c.names, ", "))
				}
			}
			if len(res.Unavailable) > 0 {
				fmt.Fprintf(a.stdout, "Unavailable: %s (the OIDC issuer did not answer; flowd keeps retrying and adds it once it does: see flowctl providers).\n", strings.Join(res.Unavailable, ", "))
			}
			if len(res.RestartNeeded) > 0 {
				fmt.Fprintf(a.stdout, "Restart flowd to apply: %s (these apply only when it starts).\n", strings.Join(res.RestartNeeded, ", "))
			}
			return nil
		},
	}
}

// authMethodText is the token endpoint auth method and where it came from
// ("client_secret_post (preset)").
func authMethodText(p wire.Provider) string {
	if p.AuthMethodFrom == "" {
		return dash(p.AuthMethod)
	}
	return fmt.Sprintf("%s (%s)", dash(p.AuthMethod), p.AuthMethodFrom)
}

// issText says how the redirect's iss is checked (RFC 9207).
func issText(p wire.Provider) string {
	switch {
	case p.IssuerRequired:
		return "required"
	case p.Issuer != "":
		return "checked"
	}
	return "-"
}

func (a *app) graphCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "Print the flow state machine as a diagram",
		Long: `graph prints the state machine as Mermaid or Graphviz DOT, rendered from the
same transition table flowd runs. It needs no flowd.`,
		Example: `  flowctl graph > machine.mmd
  flowctl graph --format dot | dot -Tsvg > machine.svg`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			var g string
			switch format {
			case "mermaid":
				g = states.Mermaid()
			case "dot":
				g = states.DOT()
			default:
				return usagef("unknown format %q: use mermaid or dot", format)
			}
			if a.json {
				return a.writeJSON(struct {
					Format string `json:"format"`
					Graph  string `json:"graph"`
				}{format, g})
			}
			_, err := fmt.Fprint(a.stdout, g)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "mermaid", "mermaid or dot")
	return cmd
}
