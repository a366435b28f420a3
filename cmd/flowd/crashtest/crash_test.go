package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
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
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q is not a number", name, v)
	return n
}

// TestCrash drives many concurrent flows through a real flowd, kills it
// with SIGKILL at random moments, restarts it, and after each restart
// checks that every transition acknowledged to a client is in the log,
// that histories replay legally, that no flow is stuck, and that no
// authorization code reached the token endpoint twice.
func TestCrash(t *testing.T) {
	kills := envInt(t, "FLOWD_CRASH_KILLS", 200)
	if testing.Short() && os.Getenv("FLOWD_CRASH_KILLS") == "" {
		kills = 30
	}
	workers := envInt(t, "FLOWD_CRASH_WORKERS", 8)
	seed := uint64(envInt(t, "FLOWD_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("seed %d (replay with FLOWD_CRASH_SEED=%d), %d kills, %d workers", seed, seed, kills, workers)

	begin := time.Now()
	prov := newProvider(t, 15*time.Millisecond)
	r := newRig(t, prov, rigOptions{})
	d := newDriver(t, r, prov, seed)
	d.run(kills, workers)
	d.final()
	d.report(time.Since(begin))
}

// driver runs the load and the kills, and keeps the counts.
type driver struct {
	t    *testing.T
	r    *rig
	prov *oauthtest.Server
	led  *ledger
	rng  *rand.Rand

	// gate pauses the load: workers hold it shared per step, the
	// controller takes it to check with no request in flight.
	gate sync.RWMutex

	poolMu  sync.Mutex
	pool    []string // started flows no callback or cancel was sent for yet
	replays []replay // callbacks sent, to send again later

	svcToken atomic.Pointer[string]

	// Counts.
	kills, startupKills, restarts int
	checkedRestarts               int
	lostTotal                     int
	lostWhy                       []string
	illegal                       []string
	stuck                         []string
	flowsChecked                  int
	unexpected                    atomic.Int64
	unexpectedSamples             []string
	unexpectedMu                  sync.Mutex
	requests, noAnswer            atomic.Int64
	downtime                      time.Duration
	restartTimes                  []time.Duration
}

type replay struct {
	state, code string
}

func newDriver(t *testing.T, r *rig, prov *oauthtest.Server, seed uint64) *driver {
	return &driver{t: t, r: r, prov: prov, led: newLedger(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// run starts flowd, then kills and restarts it kills times under load.
func (d *driver) run(kills, workers int) {
	t := d.t
	d.gate.Lock() // paused until flowd is up
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range workers {
		rng := rand.New(rand.NewPCG(d.rng.Uint64(), uint64(i)))
		wg.Go(func() { d.worker(ctx, i, rng) })
	}
	runBegan := time.Now()
	defer func() {
		// The gate is held here (flowd was just killed): let the workers
		// see ctx is done.
		cancel()
		d.gate.Unlock()
		wg.Wait()
	}()

	for d.kills < kills {
		// Some kills land while flowd is starting: opening the log,
		// interrupting exchanges and expiring overdue flows.
		if d.rng.IntN(10) == 0 && d.kills > 0 {
			d.r.spawn()
			time.Sleep(time.Duration(d.rng.IntN(40_000)) * time.Microsecond)
			d.r.kill()
			d.kills++
			d.startupKills++
			continue
		}
		d.restart(nil)
		d.check(d.restarts%25 == 0)
		d.runThenKill(time.Duration(30+d.rng.IntN(300)) * time.Millisecond)
		if d.kills%50 == 0 {
			t.Logf("%d kills, %d flows so far, %v", d.kills, len(d.led.all()), time.Since(runBegan).Round(time.Millisecond))
		}
	}
}

// restart starts flowd and waits until it serves, timing it; onSpawn, if
// set, runs right after the process starts.
func (d *driver) restart(onSpawn func()) {
	t := d.t
	began := time.Now()
	d.r.spawn()
	if onSpawn != nil {
		onSpawn()
	}
	require.NoError(t, d.r.ready(60*time.Second), "restart %d", d.restarts)
	d.restartTimes = append(d.restartTimes, time.Since(began))
	d.restarts++
	if d.svcToken.Load() == nil {
		b, err := os.ReadFile(filepath.Join(d.r.stateDir, "service_token"))
		require.NoError(t, err)
		tok := strings.TrimSpace(string(b))
		d.svcToken.Store(&tok)
	}
}

// runThenKill lets the clients at flowd for up, then SIGKILLs it and holds
// the clients back until the next restart.
func (d *driver) runThenKill(up time.Duration) {
	d.gate.Unlock()
	time.Sleep(up)
	d.r.kill()
	down := time.Now()
	d.kills++
	d.gate.Lock() // in-flight requests fail at once: flowd is gone
	d.downtime += time.Since(down)
}

// final restarts flowd once more, lets every flow's deadline pass, and
// checks everything: each flow's history, the whole log in global order
// (read from the database file after a clean stop), and the secret scan.
func (d *driver) final() {
	d.settle()
	require.NoError(d.t, d.r.stop(), "flowd exits cleanly on SIGTERM")
	_, n := d.checkDatabase()
	d.scanSecrets(n)
}

// settle restarts flowd once more, lets every deadline pass, checks that no
// flow is stuck and that every flow's history replays, and returns every
// flow flowd lists.
func (d *driver) settle() []wire.Flow {
	d.r.start()
	d.restarts++
	d.check(true)

	var last time.Time
	for _, a := range d.led.all() {
		if a.deadline.After(last) {
			last = a.deadline
		}
	}
	time.Sleep(time.Until(last) + 500*time.Millisecond)
	// No flow is stuck: once every deadline has passed, none is live.
	var live []wire.Flow
	for range 20 {
		live = d.list("?status=pending,awaiting_callback")
		if len(live) == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, f := range live {
		d.stuck = append(d.stuck, fmt.Sprintf("%s still %s (exchanging=%v) %v after its deadline", states.ShortID(f.State), f.Status, f.Exchanging, time.Since(f.ExpiresAt).Round(time.Millisecond)))
	}

	// Every flow's history, one by one, through states.Fold.
	all := d.list("")
	inLog := map[string]bool{}
	for _, f := range all {
		inLog[f.State] = true
		d.verify(f.State)
	}
	for id := range d.led.all() {
		if !inLog[id] {
			d.verify(id) // counted as lost
		}
	}
	d.flowsChecked = len(all)
	return all
}

// checkDatabase reads the database file of a stopped flowd, replays the
// whole log in global order, and checks every acknowledged transition is in
// it and no flow is live. It returns the flows and the record count.
func (d *driver) checkDatabase() (map[string]states.Flow, int) {
	t := d.t
	db, err := persist.Open(filepath.Join(d.r.stateDir, "flowd.db"), persist.Options{ReadOnly: true})
	require.NoError(t, err)
	var recs []states.Record
	require.NoError(t, db.Scan(context.Background(), 0, func(rec states.Record) error {
		recs = append(recs, rec)
		return nil
	}))
	require.NoError(t, db.Close())
	flows, err := states.Replay(recs, nil)
	if err != nil {
		d.illegal = append(d.illegal, "whole log: "+err.Error())
	}
	for id, a := range d.led.all() {
		s := seen{}
		if f, ok := flows[id]; ok {
			s = seenFlow(f)
			if s.state.Live() {
				d.stuck = append(d.stuck, fmt.Sprintf("%s is %s in the database after every deadline passed", states.ShortID(id), s.state))
			}
		}
		if n, why := lost(a, s); n > 0 {
			d.lostTotal += n
			d.lostWhy = append(d.lostWhy, fmt.Sprintf("db: %s: %v", states.ShortID(id), why))
		}
	}
	return flows, len(recs)
}

// check verifies, with no request in flight, the flows acknowledged since
// the last check (or all of them) and that no live flow is overdue.
func (d *driver) check(full bool) {
	d.checkedRestarts++
	ids := d.led.takeTouched()
	if full {
		// One list folds every flow in the log through the machine (a
		// history that does not replay fails the request).
		inLog := map[string]seen{}
		for _, f := range d.list("") {
			inLog[f.State] = seenWire(f)
		}
		for id, a := range d.led.all() {
			if n, why := lost(a, inLog[id]); n > 0 || len(a.contradictions) > 0 {
				d.lostTotal += n
				d.lostWhy = append(d.lostWhy, fmt.Sprintf("restart %d: %s: %v", d.restarts, states.ShortID(id), why))
			}
		}
	} else {
		for _, id := range ids {
			d.verify(id)
		}
	}
	// Right after a restart nothing is mid-exchange, and every flow whose
	// deadline passed has been expired (at open, or by the timer since).
	const slack = 2 * time.Second
	var overdue []wire.Flow
	for attempt := 0; attempt < 20; attempt++ {
		overdue = overdue[:0]
		now := time.Now()
		for _, f := range d.list("?status=pending,awaiting_callback") {
			if f.Exchanging || now.After(f.ExpiresAt.Add(slack)) {
				overdue = append(overdue, f)
			}
		}
		if len(overdue) == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, f := range overdue {
		d.stuck = append(d.stuck, fmt.Sprintf("restart %d: %s is %s (exchanging=%v) %v past its deadline", d.restarts, states.ShortID(f.State), f.Status, f.Exchanging, time.Since(f.ExpiresAt).Round(time.Millisecond)))
	}
}

// verify reads one flow's history, replays it through the machine, and
// compares it with what was acknowledged.
func (d *driver) verify(id string) {
	t := d.t
	rp, err := d.r.call("GET", "/v1/flows/"+url.PathEscape(id)+"/history", nil)
	require.NoError(t, err)
	s := seen{}
	switch rp.status {
	case http.StatusOK:
		var h wire.HistoryResponse
		require.NoError(t, json.Unmarshal(rp.body, &h))
		f, err := states.Fold(h.Records)
		if err != nil {
			d.illegal = append(d.illegal, fmt.Sprintf("%s: %v", states.ShortID(id), err))
		}
		s = seenFlow(f)
	case http.StatusNotFound:
	default:
		t.Fatalf("history of %s: %d %s", id, rp.status, rp.body)
	}
	a, ok := d.led.one(id)
	if !ok {
		return
	}
	if n, why := lost(a, s); n > 0 || len(a.contradictions) > 0 {
		d.lostTotal += n
		d.lostWhy = append(d.lostWhy, fmt.Sprintf("restart %d: %s: %v", d.restarts, states.ShortID(id), why))
	}
}

func (d *driver) list(query string) []wire.Flow {
	rp, err := d.r.call("GET", "/v1/flows"+query, nil)
	require.NoError(d.t, err)
	require.Equal(d.t, http.StatusOK, rp.status, "list: %s", rp.body)
	var l wire.ListResponse
	require.NoError(d.t, json.Unmarshal(rp.body, &l))
	return l.Flows
}

func (d *driver) report(took time.Duration) {
	t := d.t
	twice, examples := d.prov.Reused()
	redeemRequests, codes := d.prov.CodeRequests(), d.prov.Codes()
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
	slices.Sort(d.restartTimes)
	p95 := time.Duration(0)
	if n := len(d.restartTimes); n > 0 {
		p95 = d.restartTimes[n*95/100]
	}
	t.Logf("crash test: %d kills (%d during start-up), %d restarts checked, %d flows checked, %d acknowledged transitions, "+
		"%d acknowledged transitions lost, %d codes redeemed twice (%d token requests, %d distinct codes), %d illegal histories, %d stuck flows, "+
		"%d API requests (%d unanswered: flowd down), %d unexpected 5xx; restart to ready mean %v p95 %v; took %v",
		d.kills, d.startupKills, d.checkedRestarts, d.flowsChecked, acked, d.lostTotal, twice, redeemRequests, codes,
		len(d.illegal), len(d.stuck), d.requests.Load(), d.noAnswer.Load(), d.unexpected.Load(),
		restart.Round(time.Millisecond), p95.Round(time.Millisecond), took.Round(time.Second))
	fmt.Printf("CRASHTEST kills=%d flows=%d acked=%d lost=%d twice=%d illegal=%d stuck=%d duration=%v\n",
		d.kills, d.flowsChecked, acked, d.lostTotal, twice, len(d.illegal), len(d.stuck), took.Round(time.Second))
	assert.Zero(t, d.lostTotal, "acknowledged transitions lost: %v", first(d.lostWhy, 10))
	assert.Zero(t, twice, "codes redeemed twice: %v", examples)
	assert.Empty(t, d.illegal, "illegal histories")
	assert.Empty(t, d.stuck, "stuck flows")
	assert.Zero(t, d.unexpected.Load(), "unexpected responses: %v", d.unexpectedSamples)
	assert.GreaterOrEqual(t, d.kills, 1)
	assert.Positive(t, d.flowsChecked)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// scanSecrets looks for every code, verifier, token and the client secret
// in the database file and in everything flowd wrote.
func (d *driver) scanSecrets(records int) {
	secrets := map[string]bool{}
	for _, s := range d.prov.Secrets() {
		secrets[s] = true
	}
	dbBytes, err := os.ReadFile(filepath.Join(d.r.stateDir, "flowd.db"))
	require.NoError(d.t, err)
	for name, data := range map[string]string{"database file": string(dbBytes), "flowd's output": d.r.out.String()} {
		if leaks := findSecrets(data, secrets); len(leaks) > 0 {
			d.t.Errorf("%d secrets in %s, e.g. %.12s…", len(leaks), name, leaks[0])
		}
	}
	d.t.Logf("secret scan: %d secrets against %d bytes of database (%d records) and %d bytes of flowd output: none found",
		len(secrets), len(dbBytes), records, len(d.r.out.String()))
}

var tokenish = regexp.MustCompile(`[A-Za-z0-9_.~-]{8,}`)

// findSecrets returns the secrets that occur in data. Secrets are
// word-like (hex, base64url); every word of data is checked, and every
// 43-character window of long words (PKCE verifiers run into neighbours
// in binary data).
func findSecrets(data string, secrets map[string]bool) []string {
	var found []string
	lens := map[int]bool{}
	for s := range secrets {
		lens[len(s)] = true
	}
	for _, w := range tokenish.FindAllString(data, -1) {
		for n := range lens {
			for i := 0; i+n <= len(w); i++ {
				if secrets[w[i:i+n]] {
					found = append(found, w[i:i+n])
				}
			}
		}
	}
	return found
}

// worker drives flows until ctx ends, one step at a time, each under the gate.
func (d *driver) worker(ctx context.Context, id int, rng *rand.Rand) {
	for ctx.Err() == nil {
		d.gate.RLock()
		if ctx.Err() == nil {
			d.step(id, rng)
		}
		d.gate.RUnlock()
		time.Sleep(time.Duration(rng.IntN(10_000)) * time.Microsecond)
	}
}

func (d *driver) step(id int, rng *rand.Rand) {
	switch n := rng.IntN(100); {
	case n < 40:
		d.startFlow(id, rng)
	case n < 85:
		if st, ok := d.take(rng); ok {
			d.act(st, rng)
		} else {
			d.startFlow(id, rng)
		}
	case n < 95:
		d.replayOne(rng)
	default:
		if st, ok := d.anyFlow(rng); ok {
			d.status(st)
		}
	}
}

func (d *driver) startFlow(id int, rng *rand.Rand) {
	account := fmt.Sprintf("w%d-%s", id, randHex(6))
	if rng.IntN(8) == 0 {
		account = "shared" // a new flow supersedes the live earlier ones
	}
	transport := []string{"loopback", "loopback", "manual", "gateway"}[rng.IntN(4)]
	req := wire.StartRequest{Provider: "fake", TTL: []string{"2s", "3s"}[rng.IntN(2)], Account: account, Transport: transport}
	rp, ok := d.api("POST", "/v1/flows", req)
	if !ok {
		return
	}
	if rp.status != http.StatusCreated {
		d.unexpectedReply("start", rp)
		return
	}
	var st wire.StartResponse
	require.NoError(d.t, json.Unmarshal(rp.body, &st))
	d.led.start(st.State, st.ExpiresAt)
	for _, old := range st.Superseded {
		d.led.end(old, states.Error, states.Superseded)
	}
	d.poolMu.Lock()
	d.pool = append(d.pool, st.State)
	d.poolMu.Unlock()
}

// take removes a random started flow from the pool.
func (d *driver) take(rng *rand.Rand) (string, bool) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	if len(d.pool) == 0 {
		return "", false
	}
	i := rng.IntN(len(d.pool))
	st := d.pool[i]
	d.pool[i] = d.pool[len(d.pool)-1]
	d.pool = d.pool[:len(d.pool)-1]
	return st, true
}

func (d *driver) anyFlow(rng *rand.Rand) (string, bool) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	if len(d.replays) > 0 && rng.IntN(2) == 0 {
		return d.replays[rng.IntN(len(d.replays))].state, true
	}
	if len(d.pool) > 0 {
		return d.pool[rng.IntN(len(d.pool))], true
	}
	return "", false
}

func (d *driver) remember(st, code string) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	if len(d.replays) >= 500 {
		d.replays = slices.Delete(d.replays, 0, 100)
	}
	d.replays = append(d.replays, replay{st, code})
}

// act sends one callback, a pair of racing callbacks, or a cancel; or
// leaves the flow to expire.
func (d *driver) act(st string, rng *rand.Rand) {
	code := "c-" + randHex(16)
	switch n := rng.IntN(100); {
	case n < 30:
		d.relay(st, wire.CallbackRequest{State: st, Code: code}, rng.IntN(3) == 0)
		d.remember(st, code)
	case n < 50:
		d.browser(st, url.Values{"state": {st}, "code": {code}})
		d.remember(st, code)
	case n < 58:
		code = "bad-" + randHex(16)
		d.relay(st, wire.CallbackRequest{State: st, Code: code}, false)
		d.remember(st, code)
	case n < 66:
		q := url.Values{"state": {st}, "error": {"access_denied"}, "error_description": {"the user said no"}}
		if rng.IntN(2) == 0 {
			d.browser(st, q)
		} else {
			d.relay(st, wire.CallbackRequest{State: st, Error: "access_denied", ErrorDescription: "the user said no"}, false)
		}
	case n < 76:
		// A double-clicked link: the same code twice at once.
		var wg sync.WaitGroup
		wg.Go(func() { d.relay(st, wire.CallbackRequest{State: st, Code: code}, false) })
		wg.Go(func() { d.browser(st, url.Values{"state": {st}, "code": {code}}) })
		wg.Wait()
		d.remember(st, code)
	case n < 88:
		d.cancel(st)
	default:
		// Left alone: it expires, perhaps while flowd is down.
	}
}

func (d *driver) replayOne(rng *rand.Rand) {
	d.poolMu.Lock()
	if len(d.replays) == 0 {
		d.poolMu.Unlock()
		return
	}
	rp := d.replays[rng.IntN(len(d.replays))]
	d.poolMu.Unlock()
	if rng.IntN(2) == 0 {
		d.browser(rp.state, url.Values{"state": {rp.state}, "code": {rp.code}})
	} else {
		d.relay(rp.state, wire.CallbackRequest{State: rp.state, Code: rp.code}, false)
	}
}

// api calls flowd's socket; ok is false when no response came back.
func (d *driver) api(method, path string, body any) (reply, bool) {
	d.requests.Add(1)
	rp, err := d.r.call(method, path, body)
	if err != nil {
		d.noAnswer.Add(1)
		return rp, false
	}
	return rp, true
}

// relay delivers a callback through POST /v1/callbacks, as flowctl's
// paste does, or as the gateway does over TCP with the service token.
func (d *driver) relay(st string, req wire.CallbackRequest, asGateway bool) {
	var rp reply
	if tok := d.svcToken.Load(); asGateway && tok != nil {
		d.requests.Add(1)
		var err error
		rp, err = do(d.r.web, "POST", "http://"+d.r.listen+"/v1/callbacks", req, map[string]string{"Authorization": "Bearer " + *tok})
		if err != nil {
			d.noAnswer.Add(1)
			return
		}
	} else {
		var ok bool
		if rp, ok = d.api("POST", "/v1/callbacks", req); !ok {
			return
		}
	}
	switch rp.status {
	case http.StatusOK:
		var cr wire.CallbackResponse
		require.NoError(d.t, json.Unmarshal(rp.body, &cr))
		d.ended(st, cr.Flow)
		return
	case http.StatusConflict, http.StatusNotFound:
		if d.flowError(st, rp.errCode()) {
			return
		}
	}
	d.unexpectedReply("relay callback", rp)
}

// flowError records what a 404/409 from a callback or cancel acknowledged.
func (d *driver) flowError(st, code string) bool {
	switch code {
	case wire.CodeExchangeInProgress:
		d.led.ignoredOne(st)
	case wire.CodeFlowFinished:
		d.led.finished(st)
		d.led.ignoredOne(st)
	case wire.CodeFlowExpired:
		d.led.end(st, states.Expired, "")
	default:
		return false
	}
	return true
}

func (d *driver) ended(st string, f wire.Flow) {
	if f.State != st {
		d.unexpectedReply("flow "+states.ShortID(st), reply{status: 200, body: []byte("answered for flow " + f.State)})
		return
	}
	if !f.Terminal {
		return
	}
	d.led.end(st, states.State(f.Status), states.Reason(f.Reason))
	if f.Reason == string(states.Exchanged) || f.Reason == string(states.ExchangeFailed) {
		d.led.exchanged(st)
	}
}

var pageKind = regexp.MustCompile(`<body class="([a-z_]+)">`)

// browser loads the callback on flowd's loopback listener, as the
// provider's redirect does, and reads the outcome off the page.
func (d *driver) browser(st string, q url.Values) {
	d.requests.Add(1)
	resp, err := d.r.web.Get("http://" + d.r.listen + "/oauth/callback?" + q.Encode())
	if err != nil {
		d.noAnswer.Add(1)
		return
	}
	body := make([]byte, 8<<10)
	n, _ := resp.Body.Read(body)
	for n < len(body) {
		m, err := resp.Body.Read(body[n:])
		n += m
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	page := string(body[:n])
	if !strings.Contains(page, "</html>") {
		d.noAnswer.Add(1) // cut short by the kill: not an acknowledgement
		return
	}
	m := pageKind.FindStringSubmatch(page)
	kind := ""
	if m != nil {
		kind = m[1]
	}
	coded := q.Get("code") != ""
	switch kind {
	case "connected":
		d.led.end(st, states.Complete, states.Exchanged)
		d.led.exchanged(st)
	case "denied":
		d.led.end(st, states.Error, states.ProviderDenied)
	case "failed":
		if coded {
			d.led.end(st, states.Error, states.ExchangeFailed)
			d.led.exchanged(st)
		} else {
			d.led.end(st, states.Error, "")
		}
	case "expired":
		d.led.end(st, states.Expired, "")
	case "already_used":
		d.led.end(st, states.Complete, states.Exchanged)
		d.led.ignoredOne(st)
	case "ended":
		d.led.finished(st)
		d.led.ignoredOne(st)
	case "in_progress":
		d.led.ignoredOne(st)
	default:
		d.unexpectedReply("browser callback", reply{status: resp.StatusCode, body: []byte(kind + ": " + tail(page, 300))})
	}
}

func (d *driver) cancel(st string) {
	rp, ok := d.api("POST", "/v1/flows/"+st+"/cancel", nil)
	if !ok {
		return
	}
	switch rp.status {
	case http.StatusOK:
		var f wire.Flow
		require.NoError(d.t, json.Unmarshal(rp.body, &f))
		d.ended(st, f)
		return
	case http.StatusConflict:
		if rp.errCode() == wire.CodeExchangeInProgress {
			return // nothing recorded
		}
	case http.StatusNotFound:
		switch rp.errCode() {
		case wire.CodeFlowFinished:
			d.led.finished(st) // a cancel of an ended flow records nothing
			return
		case wire.CodeFlowExpired:
			d.led.end(st, states.Expired, "")
			return
		}
	}
	d.unexpectedReply("cancel", rp)
}

func (d *driver) status(st string) {
	rp, ok := d.api("GET", "/v1/flows/"+st, nil)
	if !ok {
		return
	}
	if rp.status != http.StatusOK {
		d.unexpectedReply("status", rp)
		return
	}
	var f wire.Flow
	require.NoError(d.t, json.Unmarshal(rp.body, &f))
	d.ended(st, f)
}

func (d *driver) unexpectedReply(what string, rp reply) {
	d.unexpected.Add(1)
	d.unexpectedMu.Lock()
	defer d.unexpectedMu.Unlock()
	if len(d.unexpectedSamples) < 10 {
		d.unexpectedSamples = append(d.unexpectedSamples, fmt.Sprintf("%s: %d %s", what, rp.status, tail(string(rp.body), 300)))
	}
}
