package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/states"
)

// dexProvider is the provider's name in flowd's config.
const dexProvider = "dex"

// TestCrashDex is TestCrash against a real OAuth server: flowd, configured
// with Dex as its provider, runs many concurrent connects (start, the
// browser's login at Dex, the redirect to flowd's loopback listener or the
// relay route) and is killed with SIGKILL at random moments. After each
// restart the same checks as TestCrash run; at the end, Dex's token
// endpoint (through a recording proxy) must never have been shown the same
// authorization code twice, Dex must never have refused a code flowd
// redeemed for the flow it was issued to (the PKCE verifier and the client
// secret survived every kill), and Dex must accept the access tokens of
// completed flows at its userinfo endpoint.
//
// A flow against Dex costs several times a fake one (three requests to
// Dex for the login, a real token endpoint for the exchange), so the run
// is smaller than TestCrash's: 40 kills by default (10 with -short), about a minute under -race on two
// cores. FLOWD_CRASH_DEX_KILLS runs it longer; FLOWD_CRASH_DEX_WORKERS
// (default 8) and FLOWD_CRASH_DEX_SLOW (default 4) set the fast and the
// slow clients; FLOWD_CRASH_SEED replays a run's choices.
func TestCrashDex(t *testing.T) {
	dextest.Binary(t) // skip (or fail under CI=true) before building flowd
	kills := envInt(t, "FLOWD_CRASH_DEX_KILLS", 40)
	if testing.Short() && os.Getenv("FLOWD_CRASH_DEX_KILLS") == "" {
		kills = 10
	}
	workers := envInt(t, "FLOWD_CRASH_DEX_WORKERS", 8)
	slow := envInt(t, "FLOWD_CRASH_DEX_SLOW", 4)
	seed := uint64(envInt(t, "FLOWD_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("seed %d (replay with FLOWD_CRASH_SEED=%d), %d kills, %d workers (+%d slow)", seed, seed, kills, workers, slow)

	begin := time.Now()
	listen := quietPort(t)
	dex := dextest.Start(t, dextest.Options{RedirectURIs: []string{
		"http://" + listen + "/oauth/callback", gatewayBaseURL + "/oauth/callback"}})
	providers := fmt.Sprintf(`[providers.%s]
auth_url = %q
token_url = %q
client_id = %q
client_secret = %q
auth_style = "in_header"
scopes = ["openid", "email"]
`, dexProvider, dex.AuthURL, dex.TokenURL, dextest.ClientID, dextest.ClientSecret)
	r := newRig(t, nil, rigOptions{listen: listen, providers: providers})
	x := newDexDriver(t, r, dex, seed)
	x.run(kills, workers, slow)
	x.final()
	x.report(time.Since(begin), slow)
}

// quietPort returns a free loopback host:port below the kernel's ephemeral
// range. flowd is down between a kill and its restart, and its port must
// not meanwhile become the local end of one of the many connections the
// test, flowd and Dex open (those ports come from the ephemeral range): the
// restart would then fail with "address already in use".
func quietPort(t *testing.T) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low > 12000 {
		for range 100 {
			port := 10000 + rand.IntN(low-10000)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				addr := l.Addr().String()
				require.NoError(t, l.Close())
				return addr
			}
		}
	}
	return freePort(t) // no quiet range: take the kernel's pick
}

// dexDriver runs TestCrash's kill loop with a Dex login in every flow. It
// reuses the fake-provider driver's ledger, checks and callback senders;
// only the load and the end-of-run checks differ.
type dexDriver struct {
	*driver
	dex *dextest.Server
	// web is the browser's transport to Dex, closed at the end so no
	// keep-alive goroutine outlives the test (goleak).
	web *http.Transport

	// forged are the flows whose callback carried a made-up code instead
	// of Dex's: Dex refuses those, and only those.
	forgedMu sync.Mutex
	forged   map[string]bool

	// epoch counts flowd processes started; a worker compares it before
	// and after a flow's login to tell the flows whose callback went to a
	// later flowd than the one that started them.
	epoch     atomic.Int64
	straddled sync.Map // flow -> true: started by one flowd, called back at a later one

	browsed          atomic.Int64
	browseErrs       atomic.Int64
	browseErrSamples []string
	browseMu         sync.Mutex

	// Figures of the final log.
	completed, interrupted, expiredWhileDown int
	// completedAcross counts completed flows whose callback reached a
	// later flowd than the one that started them: the verifier and the
	// flow survived the kill.
	completedAcross int
	reasons         map[states.Reason]int
	// refused are flows whose genuine Dex code Dex refused.
	refused []string
	// userinfoChecked and userinfoOK count completed flows whose access
	// token was shown to Dex's userinfo endpoint, and accepted.
	userinfoChecked, userinfoOK int
}

func newDexDriver(t *testing.T, r *rig, dex *dextest.Server, seed uint64) *dexDriver {
	web := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		web.CloseIdleConnections()
		// dextest's discovery and Userinfo use the default client.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	return &dexDriver{driver: newDriver(t, r, nil, seed), dex: dex, web: web, forged: map[string]bool{}, reasons: map[states.Reason]int{}}
}

// run starts flowd, then kills and restarts it kills times under load. It
// is TestCrash's loop with a longer load window between kills: a Dex flow
// takes several times longer than a fake one.
func (x *dexDriver) run(kills, workers, slow int) {
	d, t := x.driver, x.t
	d.gate.Lock() // paused until flowd is up
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range workers + slow {
		rng := rand.New(rand.NewPCG(d.rng.Uint64(), uint64(i)))
		wg.Go(func() { x.worker(ctx, i, i >= workers, rng) })
	}
	runBegan := time.Now()
	defer func() {
		cancel()
		d.gate.Unlock()
		wg.Wait()
	}()

	for d.kills < kills {
		if d.rng.IntN(10) == 0 && d.kills > 0 {
			// Killed while starting: opening the log, interrupting
			// exchanges, expiring overdue flows.
			d.r.spawn()
			x.epoch.Add(1)
			time.Sleep(time.Duration(d.rng.IntN(40_000)) * time.Microsecond)
			d.r.kill()
			d.kills++
			d.startupKills++
			continue
		}
		d.restart(func() { x.epoch.Add(1) })
		d.check(d.restarts%10 == 0)
		d.runThenKill(time.Duration(200+d.rng.IntN(1300)) * time.Millisecond)
		if d.kills%10 == 0 {
			t.Logf("%d kills, %d flows, %d Dex logins so far, %v", d.kills, len(d.led.all()), x.browsed.Load(), time.Since(runBegan).Round(time.Millisecond))
		}
	}
}

// plan is what a worker does with one flow.
type plan int

const (
	deliver      plan = iota // log in at Dex, send the redirect to flowd
	double                   // the same redirect twice at once (a double click)
	forge                    // log in, but send a made-up code
	deny                     // ask for a scope Dex refuses: it redirects with an error
	cancelBefore             // cancel before logging in
	cancelAfter              // log in, then cancel: the code must never be redeemed
	abandon                  // short TTL, never logged in: it expires
	late                     // short TTL, log in, keep the code for a replay later
)

func pickPlan(rng *rand.Rand) plan {
	switch n := rng.IntN(100); {
	case n < 50:
		return deliver
	case n < 60:
		return double
	case n < 67:
		return forge
	case n < 74:
		return deny
	case n < 79:
		return cancelBefore
	case n < 85:
		return cancelAfter
	case n < 92:
		return abandon
	default:
		return late
	}
}

// worker drives flows until ctx ends. Each request to flowd is made under
// the gate; the login at Dex is not, so flowd may be killed and restarted
// between a flow's start and its callback. A slow worker is a user who
// takes a while between the login and the redirect: its flows are the
// ones that most often meet a later flowd than the one that started them.
// Fast workers keep the load high, so that kills land mid-exchange.
func (x *dexDriver) worker(ctx context.Context, id int, slow bool, rng *rand.Rand) {
	for ctx.Err() == nil {
		x.oneFlow(ctx, id, slow, rng)
		time.Sleep(time.Duration(rng.IntN(10_000)) * time.Microsecond)
	}
}

// locked runs fn under the gate, unless the run is over.
func (x *dexDriver) locked(ctx context.Context, fn func()) {
	x.gate.RLock()
	defer x.gate.RUnlock()
	if ctx.Err() == nil {
		fn()
	}
}

func (x *dexDriver) oneFlow(ctx context.Context, id int, slow bool, rng *rand.Rand) {
	switch n := rng.IntN(100); {
	case n < 8:
		// An old redirect again: the code must not be redeemed twice.
		x.locked(ctx, func() { x.replayOne(rng) })
		return
	case n < 11:
		x.locked(ctx, func() {
			if st, ok := x.anyFlow(rng); ok {
				x.status(st)
			}
		})
		return
	}

	p := pickPlan(rng)
	transport := []string{"loopback", "loopback", "manual", "gateway"}[rng.IntN(4)]
	ttl := []string{"3s", "4s"}[rng.IntN(2)]
	if p == abandon || p == late {
		ttl = "1s"
	}
	var scopes []string
	if p == deny {
		scopes = []string{"openid", dextest.DeniedScope}
	}
	var st wire.StartResponse
	started := false
	var epoch int64
	x.locked(ctx, func() {
		epoch = x.epoch.Load()
		st, started = x.start(id, rng, transport, ttl, scopes)
	})
	if !started {
		return
	}
	switch p {
	case cancelBefore:
		x.locked(ctx, func() { x.cancel(st.State) })
		return
	case abandon:
		return
	}

	final, ok := x.login(ctx, st)
	if !ok {
		return
	}
	if slow {
		// The user takes a while before the redirect reaches flowd (a
		// slow page, a paste): long enough for flowd to be killed and
		// restarted in between, so the callback meets a flowd that knows
		// the flow only from its log.
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
	}
	q := final.Query()
	code := q.Get("code")
	switch p {
	case cancelAfter:
		x.locked(ctx, func() { x.cancel(st.State) })
		x.remember(st.State, code)
		return
	case late:
		x.remember(st.State, code)
		return
	case forge:
		x.forgedMu.Lock()
		x.forged[st.State] = true
		x.forgedMu.Unlock()
		code = "bad-" + randHex(16)
		q.Set("code", code)
		final.RawQuery = q.Encode()
	}
	x.locked(ctx, func() {
		if x.epoch.Load() != epoch {
			x.straddled.Store(st.State, true)
		}
		if p == double {
			var wg sync.WaitGroup
			wg.Go(func() { x.browser(st.State, q) })
			wg.Go(func() { x.relay(st.State, fields(q), false) })
			wg.Wait()
			return
		}
		x.deliver(st, final, rng)
	})
	if code != "" {
		x.remember(st.State, code)
	}
}

// start asks flowd for a flow with the Dex provider.
func (x *dexDriver) start(id int, rng *rand.Rand, transport, ttl string, scopes []string) (wire.StartResponse, bool) {
	account := fmt.Sprintf("w%d-%s", id, randHex(6))
	if rng.IntN(10) == 0 {
		account = "shared" // a new flow supersedes the live earlier ones
	}
	req := wire.StartRequest{Provider: dexProvider, TTL: ttl, Account: account, Transport: transport, Scopes: scopes}
	rp, ok := x.api("POST", "/v1/flows", req)
	if !ok {
		return wire.StartResponse{}, false
	}
	if rp.status != http.StatusCreated {
		x.unexpectedReply("start", rp)
		return wire.StartResponse{}, false
	}
	var st wire.StartResponse
	require.NoError(x.t, json.Unmarshal(rp.body, &st))
	x.led.start(st.State, st.ExpiresAt)
	for _, old := range st.Superseded {
		x.led.end(old, states.Error, states.Superseded)
	}
	return st, true
}

// login does the browser's part at Dex (mock connector) and returns the
// redirect Dex sent the browser to, carrying the code or an error.
func (x *dexDriver) login(ctx context.Context, st wire.StartResponse) (*url.URL, bool) {
	b := &dextest.Browser{Connector: dextest.MockConnector, Secrets: x.dex.Secrets, Transport: x.web}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	final, err := b.Authorize(bctx, st.AuthURL)
	if ctx.Err() != nil {
		return nil, false // the run is over
	}
	if err == nil && final.Query().Get("state") != st.State {
		err = fmt.Errorf("dex redirected with state %q for flow %s", states.ShortID(final.Query().Get("state")), states.ShortID(st.State))
	}
	if endpoint := final.Scheme + "://" + final.Host + final.Path; err == nil && endpoint != st.RedirectURI {
		// Not the whole URL: its query carries the code.
		err = fmt.Errorf("dex redirected to %s, flow %s's redirect URI is %s", endpoint, states.ShortID(st.State), st.RedirectURI)
	}
	if err != nil {
		x.browseErrs.Add(1)
		x.browseMu.Lock()
		if len(x.browseErrSamples) < 5 {
			x.browseErrSamples = append(x.browseErrSamples, err.Error())
		}
		x.browseMu.Unlock()
		return nil, false
	}
	x.browsed.Add(1)
	return final, true
}

// deliver sends Dex's redirect to flowd the way the flow's transport does:
// the browser loads flowd's loopback listener; a user pastes the URL
// (manual, through the socket as flowctl does); a gateway relays it with
// the service token. Some loopback redirects are pasted too.
func (x *dexDriver) deliver(st wire.StartResponse, final *url.URL, rng *rand.Rand) {
	q := final.Query()
	switch st.Transport {
	case "gateway":
		x.relay(st.State, fields(q), rng.IntN(4) != 0)
	case "manual":
		x.relay(st.State, wire.CallbackRequest{URL: final.String()}, false)
	default:
		if rng.IntN(4) == 0 {
			x.relay(st.State, wire.CallbackRequest{URL: final.String()}, false)
		} else {
			x.browser(st.State, q)
		}
	}
}

func fields(q url.Values) wire.CallbackRequest {
	return wire.CallbackRequest{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"), ErrorDescription: q.Get("error_description")}
}

// final restarts flowd once more, lets every deadline pass, and checks
// everything: each flow's history, the whole log read from the database
// file after a clean stop, Dex's verdict on the codes and tokens, and the
// secret scan.
func (x *dexDriver) final() {
	d := x.driver
	all := d.settle()
	x.userinfo(all)
	require.NoError(x.t, d.r.stop(), "flowd exits cleanly on SIGTERM")
	flows, n := d.checkDatabase()
	for id, f := range flows {
		x.reasons[f.Reason]++
		switch f.Reason {
		case states.Exchanged:
			x.completed++
			if _, ok := x.straddled.Load(id); ok {
				x.completedAcross++
			}
		case states.ExchangeInterrupted:
			x.interrupted++
		case states.ExpiredWhileDown:
			x.expiredWhileDown++
		case states.ExchangeFailed:
			if !x.forged[id] {
				x.refused = append(x.refused, fmt.Sprintf("%s: %s (HTTP %d) %s", states.ShortID(id), f.ErrorCode, f.HTTPStatus, f.Message))
			}
		}
	}
	x.scanSecrets(n)
}

// userinfo shows Dex the access tokens flowd stored for a sample of
// completed flows: each must be the token of that flow, and Dex must
// accept it. Flows of the shared account are left out: a later flow
// replaces their token.
func (x *dexDriver) userinfo(all []wire.Flow) {
	t := x.t
	var done []wire.Flow
	for _, f := range all {
		if f.Status == string(states.Complete) && f.Account != "shared" {
			done = append(done, f)
		}
	}
	x.rng.Shuffle(len(done), func(i, j int) { done[i], done[j] = done[j], done[i] })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, f := range done[:min(len(done), 20)] {
		x.userinfoChecked++
		rp, err := x.r.call("GET", "/v1/providers/"+dexProvider+"/token?account="+url.QueryEscape(f.Account), nil)
		require.NoError(t, err)
		if !assert.Equal(t, http.StatusOK, rp.status, "token of completed flow %s: %s", states.ShortID(f.State), rp.errMessage()) {
			continue
		}
		var tok wire.TokenResponse
		require.NoError(t, json.Unmarshal(rp.body, &tok))
		if !assert.Equal(t, f.State, tok.Flow, "the token stored for %s's account comes from that flow", states.ShortID(f.State)) {
			continue
		}
		claims, err := x.dex.Userinfo(ctx, tok.AccessToken)
		if assert.NoError(t, err, "dex refuses the access token of completed flow %s", states.ShortID(f.State)) &&
			assert.NotEmpty(t, claims["sub"], "userinfo names the user") {
			x.userinfoOK++
		}
	}
}

// scanSecrets looks for every code, verifier, token and client secret that
// crossed Dex's token proxy or the browser in the database file and in
// everything flowd wrote.
func (x *dexDriver) scanSecrets(records int) {
	secrets := x.dex.Secrets.Values()
	idx := newSecretIndex(secrets)
	dbBytes, err := os.ReadFile(filepath.Join(x.r.stateDir, "flowd.db"))
	require.NoError(x.t, err)
	out := x.r.out.String()
	for name, data := range map[string]string{"database file": string(dbBytes), "flowd's output": out} {
		if leaks := idx.find(data); len(leaks) > 0 {
			x.t.Errorf("%d secrets (%v) in %s", len(leaks), kindsOf(secrets, leaks), name)
		}
	}
	x.t.Logf("secret scan: %d secrets %v against %d bytes of database (%d records) and %d bytes of flowd output",
		len(secrets), x.dex.Secrets.Kinds(), len(dbBytes), records, len(out))
}

// kindsOf names the kinds of the leaked secrets, never the secrets.
func kindsOf(secrets map[string]string, leaks []string) []string {
	var kinds []string
	for _, l := range leaks {
		if k := secrets[l]; !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// secretIndex finds any of many secrets in large data in one pass: the
// secrets are filed under their first 8 bytes, and only the secrets filed
// under the 8 bytes at a position are compared there. A Dex run has tens
// of thousands of secrets (codes, verifiers, tokens and their signatures)
// and tens of megabytes to scan; a search per secret, or per secret length
// as findSecrets does, takes minutes.
type secretIndex map[uint64][]string

// secretPrefix is the length of the key; no secret is shorter (dextest
// keeps none under 8 bytes).
const secretPrefix = 8

func newSecretIndex(secrets map[string]string) secretIndex {
	idx := secretIndex{}
	for s := range secrets {
		if len(s) >= secretPrefix {
			k := prefixKey(s)
			idx[k] = append(idx[k], s)
		}
	}
	return idx
}

func prefixKey(s string) uint64 {
	var k uint64
	for i := range secretPrefix {
		k = k<<8 | uint64(s[i])
	}
	return k
}

// find returns the secrets that occur in data, each once.
func (idx secretIndex) find(data string) []string {
	var found []string
	seen := map[string]bool{}
	for i := 0; i+secretPrefix <= len(data); i++ {
		for _, s := range idx[prefixKey(data[i:])] {
			if !seen[s] && strings.HasPrefix(data[i:], s) {
				seen[s] = true
				found = append(found, s)
			}
		}
	}
	return found
}

func TestSecretIndex(t *testing.T) {
	secrets := map[string]string{"c-0123456789abcdef": "code", "Zm9vYmFyYmF6cXV4": "code_verifier", "eyJhbGciOi.x.sig-part-123": "access_token"}
	idx := newSecretIndex(secrets)
	assert.Equal(t, []string{"c-0123456789abcdef"}, idx.find("x\x00c-0123456789abcdef\x00"))
	assert.Equal(t, []string{"Zm9vYmFyYmF6cXV4"}, idx.find("AAZm9vYmFyYmF6cXV4AA"), "a secret run into its neighbours")
	assert.Len(t, idx.find("eyJhbGciOi.x.sig-part-123 and Zm9vYmFyYmF6cXV4 twice: Zm9vYmFyYmF6cXV4"), 2)
	assert.Empty(t, idx.find("c-0123456789abcdeX eyJhbGciOi.x.sig"), "a secret's prefix is not the secret")
	assert.Equal(t, []string{"code"}, kindsOf(secrets, []string{"c-0123456789abcdef"}))
}

func (x *dexDriver) report(took time.Duration, slow int) {
	d, t := x.driver, x.t
	codes, twice := x.dex.CodesPresented()
	acked := 0
	for _, a := range d.led.all() {
		acked += a.transitions()
	}
	var restart time.Duration
	for _, rt := range d.restartTimes {
		restart += rt
	}
	if len(d.restartTimes) > 0 {
		restart /= time.Duration(len(d.restartTimes))
	}
	t.Logf("flows by how they ended: %v", x.reasons)
	t.Logf("dex crash test: %d kills (%d during start-up), %d restarts checked, %d flows checked, %d Dex logins (%d failed), "+
		"%d acknowledged transitions, %d lost, %d codes presented to Dex (%d twice), %d token requests, "+
		"%d completed (%d of them called back at a later flowd than started them), %d exchanges interrupted by a kill, %d expired while down, %d genuine codes refused, "+
		"%d/%d stored tokens accepted at userinfo, %d illegal histories, %d stuck flows, "+
		"%d API requests (%d unanswered: flowd down), %d unexpected responses; restart to ready mean %v; took %v",
		d.kills, d.startupKills, d.checkedRestarts, d.flowsChecked, x.browsed.Load(), x.browseErrs.Load(),
		acked, d.lostTotal, codes, twice, x.dex.TokenRequests("authorization_code"),
		x.completed, x.completedAcross, x.interrupted, x.expiredWhileDown, len(x.refused),
		x.userinfoOK, x.userinfoChecked, len(d.illegal), len(d.stuck),
		d.requests.Load(), d.noAnswer.Load(), d.unexpected.Load(), restart.Round(time.Millisecond), took.Round(time.Second))
	fmt.Printf("CRASHTEST-DEX kills=%d flows=%d acked=%d lost=%d twice=%d codes=%d completed=%d across=%d interrupted=%d userinfo=%d/%d illegal=%d stuck=%d duration=%v\n",
		d.kills, d.flowsChecked, acked, d.lostTotal, twice, codes, x.completed, x.completedAcross, x.interrupted,
		x.userinfoOK, x.userinfoChecked, len(d.illegal), len(d.stuck), took.Round(time.Second))
	assert.Zero(t, d.lostTotal, "acknowledged transitions lost: %v", first(d.lostWhy, 10))
	assert.Zero(t, twice, "authorization codes presented to Dex more than once")
	assert.Empty(t, d.illegal, "illegal histories")
	assert.Empty(t, d.stuck, "stuck flows")
	assert.Zero(t, d.unexpected.Load(), "unexpected responses: %v", d.unexpectedSamples)
	assert.Empty(t, x.refused, "Dex refused codes flowd redeemed for the flow they were issued to (verifier or client secret lost?)")
	assert.Zero(t, x.browseErrs.Load(), "logins at Dex failed: %v", x.browseErrSamples)
	assert.Positive(t, codes, "no code reached Dex: the load did not exercise the exchange")
	assert.Positive(t, x.completed, "no flow completed against Dex")
	assert.Positive(t, x.userinfoChecked, "no completed flow to show Dex a token of")
	if slow > 0 && d.kills >= 10 {
		assert.Positive(t, x.completedAcross, "no flow completed at a later flowd than the one that started it: the kills did not fall between a start and its callback")
	}
	assert.GreaterOrEqual(t, d.kills, 1)
}
