package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// execCredential is kubectl's exec credential plugin output
// (client.authentication.k8s.io/v1 ExecCredential): the token, and when it
// expires, so kubectl runs the plugin again only then.
type execCredential struct {
	APIVersion string               `json:"apiVersion"`
	Kind       string               `json:"kind"`
	Status     execCredentialStatus `json:"status"`
}

type execCredentialStatus struct {
	// ExpirationTimestamp is RFC 3339 in UTC, whole seconds, as
	// Kubernetes' metav1.Time writes it; absent for a token that does not
	// say when it expires.
	ExpirationTimestamp string `json:"expirationTimestamp,omitempty"`
	Token               string `json:"token"`
}

// kubectlCredential is what token --format kubectl prints.
func kubectlCredential(tok wire.TokenResponse) execCredential {
	c := execCredential{APIVersion: "client.authentication.k8s.io/v1", Kind: "ExecCredential",
		Status: execCredentialStatus{Token: tok.AccessToken}}
	if !tok.Expiry.IsZero() {
		c.Status.ExpirationTimestamp = tok.Expiry.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	return c
}

// credentialHost is which connection answers git for a host.
type credentialHost struct {
	provider string
	// username is what git is told when the connection names no account
	// (GitLab wants "oauth2" with an OAuth token; GitHub takes any name).
	username string
}

// defaultCredentialHosts maps the hosts of the presets' providers.
var defaultCredentialHosts = map[string]credentialHost{
	"github.com": {provider: "github", username: "x-access-token"},
	"gitlab.com": {provider: "gitlab", username: "oauth2"},
}

func (a *app) credentialCmd() *cobra.Command {
	var hostFlags []string
	cmd := &cobra.Command{
		Use:   "credential <get|store|erase>",
		Short: "Be git's credential helper: answer git with a fresh token from flowd",
		Long: `credential speaks git's credential-helper protocol (git help credential): git
writes attributes (protocol, host, username, ...) on stdin, and for "get"
flowctl answers with username and password, the password being a valid
access token of the provider the host maps to, refreshed by flowd when due.
github.com maps to the provider github and gitlab.com to gitlab; --host adds
or overrides a mapping. A username in the remote URL (https://octocat@github.com/...)
picks that account when the provider has several.

"store" and "erase" are accepted and ignored: flowd owns the token, so git
neither saves it nor can delete it (disconnect with flowctl disconnect). A
host no mapping names gets no answer, so git asks its next helper.

Configure git (for github.com only; the empty helper first stops other
helpers from answering for that host):

  git config --global credential.https://github.com.helper ''
  git config --global --add credential.https://github.com.helper '!flowctl credential'`,
		Example: `  git config --global credential.https://github.com.helper '!flowctl credential'
  git config --global credential.https://git.example.com.helper '!flowctl credential --host git.example.com=forgejo'
  printf 'protocol=https\nhost=github.com\n\n' | flowctl credential get`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			hosts, err := parseCredentialHosts(hostFlags)
			if err != nil {
				return err
			}
			attrs, err := readCredentialAttrs(a.stdin)
			if err != nil {
				return err
			}
			switch args[0] {
			case "get":
			case "store", "erase":
				return nil
			default:
				return usagef("unknown credential operation %q: git calls get, store or erase", args[0])
			}
			if attrs["protocol"] != "https" {
				return nil // tokens go over https only; git asks its next helper
			}
			h, ok := hosts[strings.ToLower(attrs["host"])]
			if !ok {
				return nil
			}
			cl := a.client()
			defer cl.Close()
			account := attrs["username"]
			if account == h.username {
				account = "" // the placeholder git was told before names no account
			}
			tok, err := cl.Token(cmd.Context(), h.provider, account)
			if err != nil {
				return fmt.Errorf("flowctl credential: a token for %s (host %s): %w", accountLabel(h.provider, account), attrs["host"], err)
			}
			username := first(attrs["username"], tok.Account, h.username)
			var b strings.Builder
			fmt.Fprintf(&b, "username=%s\npassword=%s\n", username, tok.AccessToken)
			if !tok.Expiry.IsZero() {
				// git 2.41 and later stop using the password after it; older
				// ones ignore the attribute.
				fmt.Fprintf(&b, "password_expiry_utc=%d\n", tok.Expiry.Unix())
			}
			_, err = io.WriteString(a.stdout, b.String())
			return err
		},
	}
	cmd.Flags().StringArrayVar(&hostFlags, "host", nil, "map a host to a provider, as HOST=PROVIDER (repeatable); github.com=github and gitlab.com=gitlab are built in")
	return cmd
}

var hostRE = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]{1,5})?$`)

func parseCredentialHosts(flags []string) (map[string]credentialHost, error) {
	hosts := map[string]credentialHost{}
	for k, v := range defaultCredentialHosts {
		hosts[k] = v
	}
	for _, f := range flags {
		host, provider, ok := strings.Cut(f, "=")
		host = strings.ToLower(strings.TrimSpace(host))
		provider = strings.TrimSpace(provider)
		if !ok || provider == "" || !hostRE.MatchString(host) {
			return nil, usagef("--host %q: write it as HOST=PROVIDER, like git.example.com=forgejo", f)
		}
		hosts[host] = credentialHost{provider: provider, username: "x-access-token"}
	}
	return hosts, nil
}

// readCredentialAttrs reads git's key=value lines up to a blank line or
// the end of input. A repeated key keeps its last value; array keys
// (key[]=) are read and ignored.
func readCredentialAttrs(r io.Reader) (map[string]string, error) {
	attrs := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("flowctl credential: %q is not a key=value line of git's credential protocol", clipText(line, 40))
		}
		attrs[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("flowctl credential: read git's request: %w", err)
	}
	return attrs, nil
}

// envSpec is one --env of exec: NAME=PROVIDER or NAME=PROVIDER:ACCOUNT.
type envSpec struct{ name, provider, account string }

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseEnvSpecs(flags []string) ([]envSpec, error) {
	var out []envSpec
	for _, f := range flags {
		name, target, ok := strings.Cut(f, "=")
		provider, account, _ := strings.Cut(target, ":")
		if !ok || !envNameRE.MatchString(name) || provider == "" {
			return nil, usagef("--env %q: write it as NAME=PROVIDER or NAME=PROVIDER:ACCOUNT, like GITHUB_TOKEN=github", f)
		}
		if slices.ContainsFunc(out, func(e envSpec) bool { return e.name == name }) {
			return nil, usagef("--env %s is given twice", name)
		}
		out = append(out, envSpec{name: name, provider: provider, account: account})
	}
	if len(out) == 0 {
		return nil, usagef("give at least one --env NAME=PROVIDER, like --env GITHUB_TOKEN=github")
	}
	return out, nil
}

func (a *app) execCmd() *cobra.Command {
	var envFlags []string
	cmd := &cobra.Command{
		Use:   "exec --env NAME=PROVIDER[:ACCOUNT]... -- <command> [args...]",
		Short: "Run a command with fresh access tokens in its environment",
		Long: `exec asks flowd for a valid access token for each --env (refreshed when due),
puts each in the named environment variable, and runs the command in
flowctl's place: its exit code is flowctl's. Tokens go only into the
command's environment, never into any process's arguments, which every local
user can read. If any token cannot be had, the command does not run and
flowctl exits 1 saying why.`,
		Example: `  flowctl exec --env GITHUB_TOKEN=github -- gh repo list
  flowctl exec --env GH_TOKEN=github:octocat --env GOOGLE_TOKEN=google -- ./deploy.sh`,
		Args: argsUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			specs, err := parseEnvSpecs(envFlags)
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return fmt.Errorf("flowctl exec: %w", err)
			}
			cl := a.client()
			env := a.environ()
			for _, s := range specs {
				tok, err := cl.Token(cmd.Context(), s.provider, s.account)
				if err != nil {
					cl.Close()
					return fmt.Errorf("flowctl exec: %s: a token for %s: %w; the command was not run", s.name, accountLabel(s.provider, s.account), err)
				}
				env = setEnv(env, s.name, tok.AccessToken)
			}
			cl.Close()
			return a.runCommand(cmd.Context(), path, args, env)
		},
	}
	cmd.Flags().StringArrayVar(&envFlags, "env", nil, "NAME=PROVIDER or NAME=PROVIDER:ACCOUNT: put that connection's access token in $NAME (repeatable)")
	return cmd
}

// setEnv sets name in env, replacing an earlier value.
func setEnv(env []string, name, value string) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	return append(out, name+"="+value)
}

// runCommand runs the command in flowctl's place (exec(2)) where it can,
// so signals and the exit status are the command's own; otherwise as a
// child.
func (a *app) runCommand(ctx context.Context, path string, args, env []string) error {
	if a.execve != nil {
		err := a.execve(path, args, env) // returns only on failure
		return fmt.Errorf("flowctl exec: run %s: %w", args[0], err)
	}
	return a.runChild(ctx, path, args, env)
}

// runChild runs the command as flowctl's child and returns its exit code
// as flowctl's (128+signal when a signal ended it). It is the way on
// systems without exec(2), and in tests.
func (a *app) runChild(ctx context.Context, path string, args, env []string) error {
	c := exec.Command(path, args[1:]...)
	c.Env, c.Stdin, c.Stdout, c.Stderr = env, a.stdin, a.stdout, a.stderr
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		code := ee.ExitCode()
		if code < 0 {
			code = 128 + signalOf(ee)
		}
		return silentExit(code)
	}
	return fmt.Errorf("flowctl exec: run %s: %w", args[0], err)
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
