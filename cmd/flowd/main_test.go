package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowdhq/flowd/cmd/internal/daemon"
	"github.com/flowdhq/flowd/internal/hermetic"
	"github.com/flowdhq/flowd/internal/oauthtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(hermetic.Wrap(m))
}

// A second flowd on the same state directory, with the real bbolt log,
// fails at once with an error naming the database.
func TestSecondFlowdOnSameStateDir(t *testing.T) {
	dir, err := os.MkdirTemp("", "fd")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	o := daemon.Options{Flags: daemon.Flags{StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "a"), Listen: "127.0.0.1:0"}}
	first, err := daemon.Open(context.Background(), o)
	require.NoError(t, err)
	defer first.Close()

	o.Socket = filepath.Join(dir, "b")
	begin := time.Now()
	_, err = daemon.Open(context.Background(), o)
	took := time.Since(begin)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "state", "flowd.db"))
	t.Logf("second flowd refused after %v: %v", took.Round(time.Millisecond), err)
}

func TestInvalidConfigExitsNonZeroNamingFileAndField(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, []byte("[providers.github]\nclient_id = \"x\"\nauth_stlye = \"in_header\"\n"), 0o600))
	var out bytes.Buffer
	code := run([]string{"-check-config", "-config", cfg}, &out)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), cfg)
	assert.Contains(t, out.String(), "providers.github.auth_stlye")
	assert.Contains(t, out.String(), "unknown setting")
}

func TestUsageErrorsExitTwo(t *testing.T) {
	var out bytes.Buffer
	assert.Equal(t, 2, run([]string{"-no-such-flag"}, &out))
	assert.Equal(t, 2, run([]string{"extra-arg"}, &out))
	assert.Equal(t, 2, run([]string{"-log-level", "loud"}, &out))
	assert.Equal(t, 0, run([]string{"-h"}, &out))
	assert.Contains(t, out.String(), "-state-dir")
}

// -check-config shows each provider's token endpoint auth method, where it
// came from, and how iss is checked.
func TestCheckConfigShowsAuthMethodAndIss(t *testing.T) {
	prov := oauthtest.New(t, oauthtest.Options{Public: true})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf("[providers.github]\nclient_id = \"x\"\nclient_secret = \"s\"\n\n[providers.idp]\nissuer = %q\nclient_id = %q\n\n"+
		"[providers.corp]\nauth_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\nclient_id = \"x\"\nclient_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n",
		prov.Issuer, prov.ClientID)
	require.NoError(t, os.WriteFile(cfg, []byte(body), 0o600))
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"-check-config", "-config", cfg}, &out), out.String())
	assert.Contains(t, out.String(), "token endpoint auth: client_secret_post, from preset)")
	assert.Contains(t, out.String(), "token endpoint auth: none, from discovery; iss required: "+prov.Issuer+")")
	assert.Contains(t, out.String(), "token endpoint auth: client_secret_post, from setting)")
	// The device endpoint, from the preset and from discovery.
	assert.Contains(t, out.String(), "device transport (RFC 8628): https://github.com/login/device/code\n")
	assert.Contains(t, out.String(), "device transport (RFC 8628): "+prov.DeviceAuthURL+"\n")
	assert.Equal(t, 2, strings.Count(out.String(), "device transport"), "corp has none")
}

// -check-config says where each start-up setting came from: the flag
// over the environment over the file over the default.
func TestCheckConfigShowsWhereSettingsComeFrom(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, []byte("listen = \"127.0.0.1:7007\"\nstate_dir = \"/file/state\"\nstore = \"etcd\"\n[etcd]\nendpoints = [\"https://file:2379\"]\n"), 0o600))
	t.Setenv("FLOWD_STATE_DIR", "/env/state")
	t.Setenv("FLOWD_ETCD_PREFIX", "env/")
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"-check-config", "-config", cfg, "-socket", "/flag/flowd.sock"}, &out), out.String())
	for _, want := range []string{
		"config          " + cfg + " (flag)",
		"state-dir       /env/state (environment)",
		"socket          /flag/flowd.sock (flag)",
		"listen          127.0.0.1:7007 (config file)",
		"store           etcd (config file)",
		"etcd-endpoints  https://file:2379 (config file)",
		"etcd-prefix     env/ (environment)",
		"log-level       info (default)",
	} {
		assert.Contains(t, out.String(), want)
	}
}
