package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/internal/syncbuf"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
)

// clusterReplica is one flowd process in cluster mode.
type clusterReplica struct {
	name, socket, listen string
	cmd                  *exec.Cmd
	out                  syncbuf.Buffer
	exited               chan struct{}
}

// The first scenario with the real binaries: two flowd replicas on
// a three-member etcd cluster, a flow started on A with flowctl, its
// callback relayed by a gateway to B, and `flowctl wait` on A returns
// complete.
func TestClusterCallbackOnAnotherReplica(t *testing.T) {
	flowd, flowctl := buildBinaries(t)
	etcd := etcdtest.Start(t, 3, etcdtest.Options{})

	var exchanges atomic.Int64
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exchanges.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-cluster", "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(prov.Close)

	home := t.TempDir()
	configHome := filepath.Join(home, "config")
	require.NoError(t, os.MkdirAll(filepath.Join(configHome, "flowd"), 0o700))
	serviceToken := filepath.Join(home, "service_token")
	require.NoError(t, os.WriteFile(serviceToken, []byte(strings.Repeat("7", 48)), 0o600))
	cfg := fmt.Sprintf(`public_base_url = "https://gateway.example.test"
service_token_file = %q

[providers.fake]
auth_url = "%s/authorize"
token_url = "%s/token"
client_id = "cluster-client"
auth_style = "in_params"
`, serviceToken, prov.URL, prov.URL)
	require.NoError(t, os.WriteFile(filepath.Join(configHome, "flowd", "config.toml"), []byte(cfg), 0o600))
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)

	start := func(name string) *clusterReplica {
		sock := shortDir(t)
		r := &clusterReplica{name: name, socket: filepath.Join(sock, "flowd.sock"),
			listen: fmt.Sprintf("127.0.0.1:%d", dextest.FreePort(t)), exited: make(chan struct{})}
		r.cmd = exec.Command(flowd, "-store", "etcd", "-etcd-endpoints", strings.Join(etcd.Endpoints(), ","),
			"-state-dir", filepath.Join(home, name), "-socket", r.socket, "-listen", r.listen)
		r.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+configHome, etcdlog.KeyEnv+"="+base64.StdEncoding.EncodeToString(key))
		r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
		require.NoError(t, r.cmd.Start())
		go func() { _ = r.cmd.Wait(); close(r.exited) }()
		t.Cleanup(func() {
			_ = r.cmd.Process.Signal(os.Interrupt)
			select {
			case <-r.exited:
			case <-time.After(20 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.exited
			}
			if t.Failed() {
				t.Logf("flowd %s output:\n%s", name, r.out.String())
			}
		})
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(r.socket); err == nil {
				return r
			}
			select {
			case <-r.exited:
				t.Fatalf("flowd %s exited before it served:\n%s", name, r.out.String())
			case <-time.After(50 * time.Millisecond):
			}
			require.True(t, time.Now().Before(deadline), "flowd %s did not serve within 60s:\n%s", name, r.out.String())
		}
	}
	ctl := func(r *clusterReplica, args ...string) (stdout, stderr string, code int) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, flowctl, args...)
		cmd.Env = append(os.Environ(), "FLOWD_SOCKET="+r.socket)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return out.String(), errb.String(), code
	}

	a, b := start("a"), start("b")

	out, stderr, code := ctl(a, "connect", "fake", "--transport", "gateway", "--no-browser", "--json")
	require.Equal(t, 0, code, stderr)
	var st struct {
		State   string `json:"state"`
		AuthURL string `json:"auth_url"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.NotEmpty(t, st.State)

	// The gateway behind the load balancer relays the redirect to b.
	body, _ := json.Marshal(map[string]string{"state": st.State, "code": "code-from-the-provider"})
	req, err := http.NewRequest(http.MethodPost, "http://"+b.listen+"/v1/callbacks", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("7", 48))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "relay to b: %s", answer)

	out, stderr, code = ctl(a, "wait", st.State, "--json")
	require.Equal(t, 0, code, "flowctl wait on a: %s", stderr)
	var f struct {
		Status      string `json:"status"`
		TokenStored bool   `json:"token_stored"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &f), out)
	assert.Equal(t, "complete", f.Status)
	assert.True(t, f.TokenStored)
	assert.EqualValues(t, 1, exchanges.Load(), "one exchange")

	out, stderr, code = ctl(b, "token", "fake", "--json")
	require.Equal(t, 0, code, "the token is there for every replica: %s", stderr)
	assert.Contains(t, out, "at-cluster")

	// Quorum lost: flowctl says the store is unavailable, and where.
	etcd.Stop(0)
	etcd.Stop(1)
	_, stderr, code = ctl(a, "connect", "fake", "--transport", "gateway", "--no-browser", "--json")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, stderr, "store is unavailable, so nothing was changed", "the user is told the store is unavailable")
	assert.Contains(t, stderr, "etcdctl endpoint health", "and what to check")
	etcd.RestartAsync(0)
	etcd.RestartAsync(1)
	etcd.WaitReady(0)
	etcd.WaitReady(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, stderr, code = ctl(a, "connect", "fake", "--transport", "gateway", "--no-browser", "--json")
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, 0, code, "flowd recovers once quorum is back: %s", stderr)
}
