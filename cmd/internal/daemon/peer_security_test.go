package daemon

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

const peerHelperEnv = "FLOWD_PEER_HELPER_SOCKET"

// TestPeerHelperProcess is not a test: it is the client another uid runs
// (see TestSocketRefusesAnotherUID). It calls GET /v1/health on the socket
// and prints what happened.
func TestPeerHelperProcess(t *testing.T) {
	sock := os.Getenv(peerHelperEnv)
	if sock == "" {
		t.Skip("helper process for TestSocketRefusesAnotherUID; runs only as its child")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://flowd/v1/health")
	if err != nil {
		fmt.Printf("RESULT dial-error %v\n", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("RESULT status %d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
}

// asNobody runs this test binary as uid/gid 65534, as TestPeerHelperProcess,
// against sock, and returns the RESULT line.
func asNobody(t *testing.T, bin, sock string) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestPeerHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), peerHelperEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper as uid 65534: %s", out)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "RESULT ") {
			return strings.TrimPrefix(l, "RESULT ")
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return ""
}

// TestSocketRefusesAnotherUID runs a real client as another uid (65534).
// With flowd's own modes (socket 0600 in a 0700 directory) the kernel
// refuses it at connect; and should the socket be opened up (a chmod, a
// permissive directory), flowd itself refuses it by SO_PEERCRED: 403, and
// no flow is touched.
func TestSocketRefusesAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a client as another uid needs root")
	}
	self, err := os.Executable()
	require.NoError(t, err)
	// The test binary sits in go's private build directory: copy it where
	// uid 65534 may run it.
	binDir, err := os.MkdirTemp("", "fdpeer")
	require.NoError(t, err)
	defer os.RemoveAll(binDir)
	require.NoError(t, os.Chmod(binDir, 0o755))
	bin := filepath.Join(binDir, "daemon.test")
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))

	d, _ := faultDaemon(t, "http://127.0.0.1:1/token", time.Second)
	res := asNobody(t, bin, d.SocketPath)
	t.Logf("uid 65534 on flowd's socket as created: %s", res)
	assert.Contains(t, res, "dial-error")
	assert.Contains(t, res, "permission denied", "the socket's mode keeps other users out")

	// Open the socket up, as a careless chmod or a shared directory would.
	require.NoError(t, os.Chmod(filepath.Dir(d.SocketPath), 0o755))
	require.NoError(t, os.Chmod(d.SocketPath, 0o666))
	res = asNobody(t, bin, d.SocketPath)
	t.Logf("uid 65534 on an opened-up socket: %s", res)
	assert.True(t, strings.HasPrefix(res, "status 403 "), "flowd refuses a peer with another uid: %s", res)
	assert.Contains(t, res, `"code":"forbidden"`)
	assert.Contains(t, res, "your uid is 65534", "the message names the caller's uid")
}

// Near misses of the service token are refused: one character wrong at
// the same length, a prefix, an extension, the token in the query string.
func TestServiceTokenNearMissesRefused(t *testing.T) {
	d, _ := faultDaemon(t, "http://127.0.0.1:1/token", time.Second)
	raw, err := os.ReadFile(d.ServiceTokenPath)
	require.NoError(t, err)
	tok := strings.TrimSpace(string(raw))
	flip := []byte(tok)
	flip[len(flip)-1] ^= 1
	call := func(auth, query string) int {
		req, _ := http.NewRequest("GET", "http://"+d.Addr+"/v1/flows/no-such-state"+query, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusNotFound, call("Bearer "+tok, ""), "the real token gets past authorization (to an unknown state)")
	for name, auth := range map[string]string{
		"one character wrong, same length": "Bearer " + string(flip),
		"a prefix":                         "Bearer " + tok[:len(tok)-1],
		"extended":                         "Bearer " + tok + "x",
		"empty":                            "Bearer ",
		"another scheme":                   "Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+tok)),
	} {
		assert.Equal(t, http.StatusUnauthorized, call(auth, ""), name)
	}
	assert.Equal(t, http.StatusUnauthorized, call("", "?access_token="+url.QueryEscape(tok)), "a token in the query is not a credential")
}

// State tokens carry at least 128 bits, never repeat, and work once: a
// second callback with a used state is refused and never reaches the
// token endpoint.
func TestStateTokensStrongAndSingleUse(t *testing.T) {
	var mu sync.Mutex
	codes := map[string]int{}
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		codes[r.Form.Get("code")]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-state-test","token_type":"bearer"}`)
	}))
	defer tokenSrv.Close()
	d, api := faultDaemon(t, tokenSrv.URL+"/token", 5*time.Second)
	start := func(account string) wire.StartResponse {
		body := fmt.Sprintf(`{"provider":"fake","account":%q}`, account)
		r, err := api.Post("http://flowd/v1/flows", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer r.Body.Close()
		require.Equal(t, http.StatusCreated, r.StatusCode)
		var st wire.StartResponse
		require.NoError(t, json.NewDecoder(r.Body).Decode(&st))
		return st
	}
	seen := map[string]bool{}
	var first wire.StartResponse
	for i := range 300 {
		st := start(fmt.Sprintf("p%d", i))
		raw, err := base64.RawURLEncoding.DecodeString(st.State)
		require.NoError(t, err, "state %q is base64url", st.State)
		require.GreaterOrEqual(t, len(raw)*8, 128, "a state carries at least 128 bits")
		require.False(t, seen[st.State], "a state repeated")
		seen[st.State] = true
		if i == 0 {
			first = st
		}
	}

	land := func(q url.Values) int {
		r, err := http.Get("http://" + d.Addr + "/oauth/callback?" + q.Encode())
		require.NoError(t, err)
		r.Body.Close()
		return r.StatusCode
	}
	assert.Equal(t, http.StatusOK, land(url.Values{"state": {first.State}, "code": {"code-one"}}))
	assert.Equal(t, http.StatusConflict, land(url.Values{"state": {first.State}, "code": {"code-two"}}), "a used state is refused")
	assert.Equal(t, http.StatusConflict, land(url.Values{"state": {first.State}, "code": {"code-one"}}), "and so is a replay")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"code-one": 1}, codes, "only the first callback reached the token endpoint")
}
