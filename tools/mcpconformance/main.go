// Command mcpconformance is the MCP client the MCP conformance suite
// (@modelcontextprotocol/conformance) runs for its auth/ scenarios. Every
// OAuth step goes through a real flowd: it starts flowd on a fresh state
// directory, asks it to connect to the MCP server by URL (flowctl connect
// <url>), plays the browser (a GET of the authorization URL, whose
// redirect it delivers to flowd's loopback listener), and takes the token
// from flowd (flowctl token <url>). It then initializes, lists the tools
// and calls the first one with that token, as plain JSON-RPC over HTTP.
//
// Usage: mcpconformance <server-url>, with FLOWD_BIN and FLOWCTL_BIN naming
// the binaries (default: flowd and flowctl beside this one). The suite
// passes the scenario in MCP_CONFORMANCE_SCENARIO and, for
// pre-registration, the client credentials in MCP_CONFORMANCE_CONTEXT.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cimdURL is the client ID metadata document URL the basic-cimd scenario
// expects as client_id; flowd is configured to point at it.
const cimdURL = "https://conformance-test.local/client-metadata.json"

// maxStepUps bounds re-authorizations for 403 insufficient_scope, on top
// of flowd's own refusal to ask again for scopes already granted.
const maxStepUps = 2

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mcpconformance <server-url>")
		os.Exit(2)
	}
	if err := run(os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, "mcpconformance:", err)
		os.Exit(1)
	}
}

// began is when the client started; its log lines carry the time since.
var began = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.3fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

func run(server string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	fd, err := startFlowd(ctx, server)
	if err != nil {
		return err
	}
	defer fd.stop()
	c := &mcpClient{url: server, flowd: fd, http: &http.Client{Timeout: 10 * time.Second}}
	err = c.session(ctx)
	if err != nil {
		fd.dumpLog()
	}
	if dir := os.Getenv("MCPCONFORMANCE_EXPORT_DIR"); dir != "" {
		// The flows' records, for testdata/replay/mcp: the export carries
		// no code, verifier, secret or token.
		name := strings.ReplaceAll(strings.TrimPrefix(os.Getenv("MCP_CONFORMANCE_SCENARIO"), "auth/"), "/", "_")
		if out, xerr := fd.ctl(ctx, "log", "export"); xerr != nil {
			logf("export: %v", xerr)
		} else if xerr := os.WriteFile(filepath.Join(dir, name+".jsonl"), out, 0o644); xerr != nil {
			logf("export: %v", xerr)
		}
	}
	return err
}

// flowd is a flowd daemon this client started, and flowctl pointed at it.
type flowd struct {
	dir, socket, flowctl string
	cmd                  *exec.Cmd
	log                  *os.File
}

func binary(env, name string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	if self, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(self), name)
	}
	return name
}

func startFlowd(ctx context.Context, server string) (*flowd, error) {
	dir, err := os.MkdirTemp("", "mcpc")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n\n[mcp]\nclient_name = \"flowd conformance client\"\nclient_metadata_url = %q\n", cimdURL)
	var cc struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if raw := os.Getenv("MCP_CONFORMANCE_CONTEXT"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &cc); err != nil {
			return nil, fmt.Errorf("MCP_CONFORMANCE_CONTEXT: %w", err)
		}
	}
	if cc.ClientID != "" {
		// Pre-registered for this MCP server (flowd learns its
		// authorization server by discovery).
		cfg += fmt.Sprintf("\n[mcp.clients.%q]\nclient_id = %q\nclient_secret = %q\n", server, cc.ClientID, cc.ClientSecret)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	fd := &flowd{dir: dir, socket: filepath.Join(dir, "s.sock"), flowctl: binary("FLOWCTL_BIN", "flowctl")}
	if fd.log, err = os.Create(filepath.Join(dir, "flowd.log")); err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return nil, err
	}
	fd.cmd = exec.Command(binary("FLOWD_BIN", "flowd"), "-config", cfgPath, "-state-dir", state, "-socket", fd.socket, "-log-level", "debug")
	fd.cmd.Stdout, fd.cmd.Stderr = fd.log, fd.log
	if err := fd.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start flowd: %w", err)
	}
	for {
		if _, err := fd.ctl(ctx, "providers"); err == nil {
			logf("flowd is up")
			return fd, nil
		}
		select {
		case <-ctx.Done():
			fd.dumpLog()
			fd.stop()
			return nil, errors.New("flowd did not come up")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (fd *flowd) stop() {
	if fd.cmd.Process != nil {
		_ = fd.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = fd.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = fd.cmd.Process.Kill()
		}
	}
	fd.log.Close()
	os.RemoveAll(fd.dir)
}

func (fd *flowd) dumpLog() {
	b, _ := os.ReadFile(fd.log.Name())
	fmt.Fprintf(os.Stderr, "--- flowd log ---\n%s--- end of flowd log ---\n", b)
}

// ctl runs flowctl with --json against this flowd and returns its stdout.
func (fd *flowd) ctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, fd.flowctl, append([]string{"--socket", fd.socket, "--json"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("flowctl %s: %v: %s %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// authorize connects to the MCP server through flowd, given the challenge
// the server answered with, and returns flowd's token for it.
func (c *mcpClient) authorize(ctx context.Context, challenge string) (string, error) {
	args := []string{"connect", c.url, "--no-browser"}
	if challenge != "" {
		args = append(args, "--challenge", challenge)
	}
	out, err := c.flowd.ctl(ctx, args...)
	if err != nil {
		return "", err
	}
	var st struct {
		State     string `json:"state"`
		AuthURL   string `json:"auth_url"`
		LaunchURL string `json:"launch_url"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("flowctl connect printed %q: %w", out, err)
	}
	logf("flowd started flow %.12s…", st.State)
	// The browser, with its cookies: flowd's launch link (which binds the
	// flow to this browser) redirects to the authorization endpoint, which
	// redirects at once to flowd's loopback listener.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := st.LaunchURL
	if next == "" {
		next = st.AuthURL
	}
	logf("the browser opens %s", map[bool]string{true: "flowd's launch link", false: "the authorization URL"}[st.LaunchURL != ""])
	var resp *http.Response
	for hop := 0; ; hop++ {
		if hop == 5 {
			return "", errors.New("the browser was redirected more than 5 times")
		}
		if resp, err = get(ctx, browser, next); err != nil {
			return "", fmt.Errorf("browser at %s: %w", next, err)
		}
		loc, err := resp.Location()
		if resp.StatusCode/100 != 3 || err != nil {
			break
		}
		next = loc.String()
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the browser ended at %s: %s", next, resp.Status)
	}
	logf("the browser ended at flowd's callback: %s", resp.Status)
	// "--": a state may start with "-" (base64url), which flowctl would
	// take for a flag.
	if out, err = c.flowd.ctl(ctx, "wait", "--", st.State); err != nil {
		return "", err
	}
	var flow struct {
		Status       string `json:"status"`
		Reason       string `json:"reason"`
		BrowserBound bool   `json:"browser_bound"`
	}
	_ = json.Unmarshal(out, &flow)
	if flow.Status != "complete" {
		return "", fmt.Errorf("the flow ended %s (%s)", flow.Status, flow.Reason)
	}
	logf("flow %.12s… is complete (browser bound: %v)", st.State, flow.BrowserBound)
	if out, err = c.flowd.ctl(ctx, "token", c.url); err != nil {
		return "", err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(out, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("flowctl token printed no token")
	}
	return tok.AccessToken, nil
}

func get(ctx context.Context, c *http.Client, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// mcpClient speaks MCP's Streamable HTTP transport, just enough for the
// suite's server: JSON-RPC requests by POST, answers as JSON or SSE.
type mcpClient struct {
	url       string
	flowd     *flowd
	http      *http.Client
	token     string
	sessionID string
	version   string
	nextID    int
	stepUps   int
}

func (c *mcpClient) session(ctx context.Context) error {
	var init struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if err := c.call(ctx, "initialize", map[string]any{
		"protocolVersion": "2025-11-25", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "flowd-mcpconformance", "version": "1"},
	}, &init); err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	c.version = init.ProtocolVersion
	if err := c.call(ctx, "notifications/initialized", nil, nil); err != nil {
		return fmt.Errorf("notifications/initialized: %w", err)
	}
	var tools struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := c.call(ctx, "tools/list", map[string]any{}, &tools); err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	logf("tools/list: %d tools", len(tools.Tools))
	if len(tools.Tools) > 0 {
		var res json.RawMessage
		if err := c.call(ctx, "tools/call", map[string]any{"name": tools.Tools[0].Name, "arguments": map[string]any{}}, &res); err != nil {
			return fmt.Errorf("tools/call %s: %w", tools.Tools[0].Name, err)
		}
	}
	return nil
}

// call sends a request (or, for notifications/*, a notification),
// authorizing through flowd on 401 and stepping up on 403 insufficient_scope.
func (c *mcpClient) call(ctx context.Context, method string, params, out any) error {
	authorized := false
	for {
		status, header, body, err := c.post(ctx, method, params)
		if err != nil {
			return err
		}
		switch {
		case status == http.StatusUnauthorized && !authorized:
			authorized = true
			if c.token, err = c.authorize(ctx, header.Get("WWW-Authenticate")); err != nil {
				return fmt.Errorf("authorize: %w", err)
			}
			continue
		case status == http.StatusForbidden && strings.Contains(header.Get("WWW-Authenticate"), "insufficient_scope"):
			if c.stepUps == maxStepUps {
				return fmt.Errorf("still 403 insufficient_scope after %d step-ups; giving up", maxStepUps)
			}
			c.stepUps++
			if c.token, err = c.authorize(ctx, header.Get("WWW-Authenticate")); err != nil {
				return fmt.Errorf("step up: %w", err)
			}
			continue
		case status/100 != 2:
			return fmt.Errorf("HTTP %d: %s", status, bytes.TrimSpace(body))
		}
		if out == nil || strings.HasPrefix(method, "notifications/") {
			return nil
		}
		var rpc struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &rpc); err != nil {
			return fmt.Errorf("answer is not JSON-RPC: %w", err)
		}
		if rpc.Error != nil {
			return fmt.Errorf("JSON-RPC error %d: %s", rpc.Error.Code, rpc.Error.Message)
		}
		return json.Unmarshal(rpc.Result, out)
	}
}

// post sends one JSON-RPC message and returns the answer's JSON (from an
// SSE stream, the first data event).
func (c *mcpClient) post(ctx context.Context, method string, params any) (int, http.Header, []byte, error) {
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	if params != nil {
		msg["params"] = params
	}
	if !strings.HasPrefix(method, "notifications/") {
		c.nextID++
		msg["id"] = c.nextID
	}
	b, _ := json.Marshal(msg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.version != "" {
		req.Header.Set("MCP-Protocol-Version", c.version)
	}
	if c.sessionID != "" {
		req.Header.Set("Mcp-Session-Id", c.sessionID)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
		c.sessionID = s
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				return resp.StatusCode, resp.Header, []byte(strings.TrimSpace(data)), nil
			}
		}
		return resp.StatusCode, resp.Header, nil, errors.New("the event stream ended without data")
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, resp.Header, body, err
}
