package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"flowd.local/flowd/cmd/internal/wire"
	"flowd.local/flowd/states"
)

func (a *app) tokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "token <provider | MCP server URL>",
		Short: "Print a valid access token for a connected provider",
		Long: `token prints the provider's access token and nothing else, so it can be used
in $(...). flowd refreshes it first when it has expired or is about to.
With --json it prints the token with its type, expiry and scopes; the refresh
token never leaves flowd.`,
		Example: `  curl -H "Authorization: Bearer $(flowctl token github)" https://api.github.com/user
  flowctl token https://mcp.example.com/mcp
  flowctl token google --json`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			tok, err := cl.Token(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("get a token for %s: %w", args[0], err)
			}
			if a.json {
				return a.writeJSON(tok)
			}
			fmt.Fprintln(a.stdout, tok.AccessToken)
			return nil
		},
	}
}

func (a *app) disconnectCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "disconnect <provider | MCP server URL>",
		Short:   "Remove the provider's stored token",
		Long:    `disconnect makes flowd forget the provider's token. It does not revoke the token at the provider.`,
		Example: `  flowctl disconnect github`,
		Args:    argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			res, err := cl.Disconnect(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("disconnect %s: %w", args[0], err)
			}
			if a.json {
				return a.writeJSON(res)
			}
			fmt.Fprintf(a.stdout, "Disconnected %s: flowd no longer holds a token for it.\n", res.Provider)
			return nil
		},
	}
}

func (a *app) providersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "providers",
		Short: "List the providers flowd is configured for",
		Long: `providers lists the providers in flowd's config file, with their client id,
default scopes, token endpoint auth method (and where it came from: setting,
preset, discovery or default), whether the redirect's iss is required or
checked (RFC 9207), and endpoints; then the MCP servers connected by URL
(PRESET mcp:<how the client was registered>, NAME the server's URL). Client
secrets are never shown.`,
		Example: `  flowctl providers
  flowctl providers --json`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := a.client()
			defer cl.Close()
			ps, err := cl.Providers(cmd.Context())
			if err != nil {
				return fmt.Errorf("list providers: %w", err)
			}
			if ps == nil {
				ps = []wire.Provider{}
			}
			if a.json {
				return a.writeJSON(wire.ProvidersResponse{Providers: ps})
			}
			if len(ps) == 0 {
				fmt.Fprintln(a.stdout, "No providers are configured; add one to flowd's config file and restart flowd.")
				return nil
			}
			tw := newTable(a.stdout, 2)
			fmt.Fprintln(tw, "NAME\tPRESET\tCLIENT ID\tSCOPES\tTOKEN AUTH\tISS\tAUTH URL")
			for _, p := range ps {
				preset := p.Preset
				if p.MCP != nil {
					// An MCP server connected by URL: how the client got registered.
					preset = "mcp:" + p.MCP.Registration
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, dash(preset), dash(p.ClientID), dash(strings.Join(p.Scopes, ",")),
					authMethodText(p), issText(p), p.AuthURL)
			}
			return tw.Flush()
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
