package cluster_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"flowd.local/flowd/engine"
	"flowd.local/flowd/persist/etcdlog"
	"flowd.local/flowd/persist/etcdlog/etcdtest"
)

// No goleak here, unlike the engine's tests: embedded etcd members leave
// peer connections and gRPC goroutines that wind down on their own time.
// The engine's watch goroutine is checked for leaks in the engine's tests.

// requestTimeout is short so that a lost quorum is reported within a
// test's patience.
const requestTimeout = 2 * time.Second

// rig is a test's cluster: an etcd cluster, a fake provider, and replicas.
type rig struct {
	t      testing.TB
	etcd   *etcdtest.Cluster
	prov   *provider
	prefix string
	key    []byte
	cfg    engine.Config
}

var prefixes atomic.Int64

func newRig(t *testing.T, members int) *rig {
	t.Helper()
	return newRigOn(t, etcdtest.Start(t, members, etcdtest.Options{}))
}

// newRigOn is a rig on a running cluster, under a prefix of its own.
func newRigOn(t testing.TB, c *etcdtest.Cluster) *rig {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	r := &rig{t: t, etcd: c, prov: newProvider(t), key: key,
		prefix: fmt.Sprintf("cluster-test/%d/", prefixes.Add(1))}
	r.cfg = engine.Config{
		Providers:       []engine.Provider{r.prov.config("gh")},
		TTL:             time.Minute,
		ExchangeTimeout: 2 * time.Second,
		PublicBaseURL:   "https://flowd.example.test",
	}
	return r
}

// replica is one flowd replica: an engine on its own connection to etcd.
type replica struct {
	*engine.Engine
	log *etcdlog.Log
}

// replica opens a replica; it is closed when the test ends.
func (r *rig) replica() *replica {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := etcdlog.Open(ctx, etcdlog.Options{Endpoints: r.etcd.Endpoints(), Prefix: r.prefix, Key: r.key, RequestTimeout: requestTimeout})
	require.NoError(r.t, err)
	cfg := r.cfg
	cfg.Log = l
	e, err := engine.Open(ctx, cfg)
	require.NoError(r.t, err)
	rep := &replica{Engine: e, log: l}
	r.t.Cleanup(rep.close)
	return rep
}

func (rep *replica) close() {
	_ = rep.Engine.Close()
	_ = rep.log.Close()
}

// waitLive waits until rep holds n live flows.
func (rep *replica) waitLive(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return rep.Stats().Live == n }, 20*time.Second, 5*time.Millisecond, "replica holds %d live flows", n)
}

// provider is an OAuth server in the test: it issues a code per
// authorization URL and counts token requests per code.
type provider struct {
	srv *httptest.Server

	mu        sync.Mutex
	n         int
	exchanges map[string]int // code -> token requests
	calls     atomic.Int64
	delay     time.Duration
}

func newProvider(t testing.TB) *provider {
	p := &provider{exchanges: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.token))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) config(name string) engine.Provider {
	return engine.Provider{Name: name, AuthURL: "https://auth.example.test/authorize", TokenURL: p.srv.URL + "/token",
		AuthStyle: oauth2.AuthStyleInParams, ClientID: "client-id", ClientSecret: "client-secret"}
}

// authorize plays the user: it returns the state and a fresh code.
func (p *provider) authorize(t testing.TB, authURL string) (state, code string) {
	t.Helper()
	u, err := url.Parse(authURL)
	require.NoError(t, err)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	return u.Query().Get("state"), fmt.Sprintf("code-%d", p.n)
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	p.calls.Add(1)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	code := r.PostForm.Get("code")
	p.mu.Lock()
	p.exchanges[code]++
	uses := p.exchanges[code]
	delay := p.delay
	p.mu.Unlock()
	time.Sleep(delay)
	w.Header().Set("Content-Type", "application/json")
	if uses > 1 {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "code already used"})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + code, "token_type": "Bearer", "expires_in": 3600})
}

// uses returns how often code was redeemed.
func (p *provider) uses(code string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exchanges[code]
}
