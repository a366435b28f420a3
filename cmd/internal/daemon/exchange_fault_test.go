package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
)

type memLogCloser struct{ *memlog.Log }

func (memLogCloser) Close() error { return nil }

// faultDaemon is a whole daemon (config file, listeners, engine) whose
// provider's token endpoint is tokenURL, with a short exchange timeout.
func faultDaemon(t *testing.T, tokenURL string, exchangeTimeout time.Duration) (*Daemon, *http.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fdx")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "flowd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"[providers.fake]\nauth_url = \"https://auth.example.test/a\"\ntoken_url = %q\nclient_id = \"cid\"\nclient_secret = %q\nauth_style = \"in_params\"\n",
		tokenURL, clientSecret)), 0o600))
	d, err := Open(context.Background(), Options{
		Flags:   Flags{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "s"), Listen: "127.0.0.1:0"},
		OpenLog: func(string) (Log, error) { return memLogCloser{memlog.New()}, nil },
		Engine:  func(c *engine.Config) { c.ExchangeTimeout = exchangeTimeout }, ShutdownGrace: 5 * time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.SocketPath)
	}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		require.NoError(t, <-served)
	})
	return d, &http.Client{Transport: tr, Timeout: time.Minute}
}

// TestTokenEndpointMisbehaves: whatever the token endpoint does (hang,
// answer slowly, garbage, HTML, a 200 carrying an error), the browser's
// callback page is answered within the exchange timeout, says "Not
// connected" and why, and the flow ends error(exchange_failed) with an
// error code a user can act on. The engine's tests cover how each answer
// is classified; this covers the daemon: its timeout, page and API.
func TestTokenEndpointMisbehaves(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	cases := []struct {
		name     string
		handler  http.HandlerFunc
		wantCode string
		// wantText is in the flow's message or the page.
		wantText string
	}{
		{"hung", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, "timeout", "did not answer within"},
		{"slower than the timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(3 * timeout):
			case <-r.Context().Done():
			}
			_, _ = io.WriteString(w, `{"access_token":"at-late","token_type":"bearer"}`)
		}, "timeout", "did not answer within"},
		{"headers then a stalled body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"access_token":`)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, "", ""},
		{"garbage", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "\x00\xff{{{ not json")
		}, "invalid_response", ""},
		{"HTML with 200", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html><body>Sign in to continue</body></html>")
		}, "invalid_response", ""},
		{"HTML with 502", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "<html><body>Bad gateway</body></html>")
		}, "http_error", "502"},
		{"200 with an error field", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"code already used"}`)
		}, "invalid_grant", "code already used"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// Reading the form lets the server notice flowd hanging up,
				// so a stalled handler's context ends with the exchange.
				_ = r.ParseForm()
				c.handler(w, r)
			}))
			defer tokenSrv.Close()
			d, api := faultDaemon(t, tokenSrv.URL+"/token", timeout)

			r, err := api.Post("http://flowd/v1/flows", "application/json", strings.NewReader(`{"provider":"fake"}`))
			require.NoError(t, err)
			var st wire.StartResponse
			require.NoError(t, json.NewDecoder(r.Body).Decode(&st))
			r.Body.Close()
			require.Equal(t, http.StatusCreated, r.StatusCode)

			begin := time.Now()
			page, err := http.Get("http://" + d.Addr + "/oauth/callback?" + url.Values{"state": {st.State}, "code": {"code-fault-1234"}}.Encode())
			require.NoError(t, err)
			body, _ := io.ReadAll(page.Body)
			page.Body.Close()
			took := time.Since(begin)
			assert.Less(t, took, timeout+10*time.Second, "the page is answered within the exchange timeout (took %v)", took)
			assert.Equal(t, http.StatusBadGateway, page.StatusCode, "%s", body)
			assert.Contains(t, string(body), "Not connected")
			assert.NotContains(t, strings.ToLower(string(body)), "you can close this tab", "never success for a failed exchange")
			assert.NotContains(t, string(body), "code-fault-1234", "the code is not echoed")

			r, err = api.Get("http://flowd/v1/flows/" + st.State)
			require.NoError(t, err)
			var f wire.Flow
			require.NoError(t, json.NewDecoder(r.Body).Decode(&f))
			r.Body.Close()
			assert.Equal(t, "error", f.Status)
			assert.Equal(t, "exchange_failed", f.Reason)
			assert.NotEmpty(t, f.ErrorCode, "a code to act on")
			assert.NotEmpty(t, f.Message, "a sentence to read")
			if c.wantCode != "" {
				assert.Equal(t, c.wantCode, f.ErrorCode)
			}
			if c.wantText != "" {
				assert.Contains(t, f.Message+" "+string(body), c.wantText)
			}
			t.Logf("%s: page %d after %v; flow %s(%s) error_code=%s message=%q", c.name, page.StatusCode, took.Round(10*time.Millisecond), f.Status, f.Reason, f.ErrorCode, f.Message)
		})
	}
}
