package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

func providerTOML(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "[providers.%s]\nauth_url = \"http://127.0.0.1:1/auth\"\ntoken_url = \"http://127.0.0.1:1/token\"\nclient_id = \"cid-%s\"\n\n", n, n)
	}
	return b.String()
}

// A config change applies without a restart, and an invalid file is
// refused naming the file, the field and the reason, leaving the running
// config and its live flows alone.
func TestReloadAppliesAValidFileAndRefusesAnInvalidOne(t *testing.T) {
	dirs := newDirs(t)
	cfgFile := filepath.Join(filepath.Dir(dirs.state), "flowd.toml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")), 0o600))
	o := dirs.opts(&lockingLogs{})
	o.ConfigPath = cfgFile
	d := openDaemon(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", dirs.sock)
	}}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer func() { tr.CloseIdleConnections(); cancel(); require.NoError(t, <-served) }()
	call := func(method, path, body string, out any) int {
		req, err := http.NewRequest(method, "http://flowd"+path, strings.NewReader(body))
		require.NoError(t, err)
		var r *http.Response
		require.Eventually(t, func() bool { r, err = c.Do(req); return err == nil }, 10*time.Second, 10*time.Millisecond)
		defer r.Body.Close()
		require.NoError(t, json.NewDecoder(r.Body).Decode(out))
		return r.StatusCode
	}
	names := func() []string {
		var pr wire.ProvidersResponse
		require.Equal(t, http.StatusOK, call("GET", "/v1/providers", "", &pr))
		assert.Equal(t, cfgFile, pr.ConfigFile, "GET /v1/providers names the file flowd reads")
		assert.True(t, pr.ConfigFileFound)
		var out []string
		for _, p := range pr.Providers {
			out = append(out, p.Name)
		}
		return out
	}
	require.Equal(t, []string{"one"}, names())
	var st wire.StartResponse
	require.Equal(t, http.StatusCreated, call("POST", "/v1/flows", `{"provider":"one"}`, &st))

	require.NoError(t, os.WriteFile(cfgFile, []byte("listen = \"127.0.0.1:9\"\n"+providerTOML("one", "two")), 0o600))
	var rr wire.ReloadResponse
	require.Equal(t, http.StatusOK, call("POST", "/v1/reload", "", &rr))
	assert.Equal(t, []string{"one", "two"}, rr.Providers)
	assert.Equal(t, []string{"two"}, rr.Added)
	assert.Empty(t, rr.Removed)
	assert.Equal(t, []string{"listen"}, rr.RestartNeeded, "listen applies only at start-up")
	assert.Equal(t, []string{"one", "two"}, names())
	var started wire.StartResponse
	require.Equal(t, http.StatusCreated, call("POST", "/v1/flows", `{"provider":"two"}`, &started), "the new provider is usable at once")

	// An invalid file: refused with file, field and reason; nothing changes.
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")+"[providers.three]\nclient_id = \"x\"\nscopes = \"repo\"\n"), 0o600))
	var e wire.Error
	require.Equal(t, http.StatusUnprocessableEntity, call("POST", "/v1/reload", "", &e))
	assert.Equal(t, wire.CodeInvalidConfig, e.Err.Code)
	assert.Contains(t, e.Err.Message, cfgFile)
	assert.Contains(t, e.Err.Message, "providers.three.scopes: expected a list")
	assert.Contains(t, e.Err.Message, "goes on with the config it had")
	assert.Equal(t, []string{"one", "two"}, names(), "the running config stays")

	// The flow started before both reloads is still live.
	var f wire.Flow
	require.Equal(t, http.StatusOK, call("GET", "/v1/flows/"+st.State, "", &f))
	assert.Equal(t, "awaiting_callback", f.Status)

	// Removing a provider: its name is reported.
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("two")), 0o600))
	rr = wire.ReloadResponse{}
	require.Equal(t, http.StatusOK, call("POST", "/v1/reload", "", &rr))
	assert.Equal(t, []string{"one"}, rr.Removed)
	assert.Empty(t, rr.RestartNeeded, "listen is back to what flowd started with")
}

// An issuer that does not answer at reload leaves out only its provider,
// retried as at start-up; a reload that removes a pending provider stops
// its retries, so the issuer answering later does not bring it back.
func TestReloadWithAnIssuerThatIsDown(t *testing.T) {
	var up atomic.Bool
	var issuer string
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q}`, issuer, issuer+"/auth", issuer+"/token")
	}))
	defer idp.Close()
	issuer = idp.URL

	dirs := newDirs(t)
	cfgFile := filepath.Join(filepath.Dir(dirs.state), "flowd.toml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")), 0o600))
	o := dirs.opts(&lockingLogs{})
	o.ConfigPath = cfgFile
	o.DiscoveryBackoff = func(int) time.Duration { return time.Millisecond }
	d := openDaemon(t, o)

	oidc := fmt.Sprintf("[providers.corp]\nissuer = %q\nclient_id = \"cid\"\nclient_secret = \"cs\"\n", issuer)
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")+oidc), 0o600))
	rr, err := d.Reload(context.Background())
	require.NoError(t, err, "an issuer that is down does not refuse the reload")
	assert.Equal(t, []string{"corp"}, rr.Unavailable)
	assert.Equal(t, []string{"one"}, d.Engine.Providers())
	_, pending := d.discovery.Unavailable("corp")
	assert.True(t, pending)

	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")), 0o600))
	rr, err = d.Reload(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"corp"}, rr.Removed)
	up.Store(true)
	time.Sleep(50 * time.Millisecond) // many 1 ms retries, had they gone on
	assert.Equal(t, []string{"one"}, d.Engine.Providers(), "a removed provider came back from an old retry")

	// With the issuer up, a reload adds it at once.
	require.NoError(t, os.WriteFile(cfgFile, []byte(providerTOML("one")+oidc), 0o600))
	rr, err = d.Reload(context.Background())
	require.NoError(t, err)
	why, _ := d.discovery.Unavailable("corp")
	assert.Empty(t, rr.Unavailable, why)
	assert.Equal(t, []string{"corp", "one"}, d.Engine.Providers())
}
