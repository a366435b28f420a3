package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/states"
)

// epoch is when the generated flows of item 2 happen; the engine's clock
// stands a minute later, so every generated live flow is still waiting.
var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// genID draws a state token the way the engine does: 32 random bytes, base64url.
func genID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b)
}

// genFlow returns the records the engine writes for a flow started at at:
// created and url_issued for a live flow, then exchange_started and
// exchange_succeeded for a finished one. The data is what a real flow carries.
func genFlow(at time.Time, finished bool) []states.Record {
	id := genID()
	due := at.Add(engine.DefaultTTL)
	rec := func(seq uint64, ev states.Event, from, to states.State, d states.Data) states.Record {
		return states.Record{Version: states.SchemaVersion, Flow: id, FlowSeq: seq, Event: ev, From: from, To: to, Time: at, Data: d}
	}
	recs := []states.Record{
		rec(1, states.Created, "", states.Pending, states.Data{
			Provider: providerName, Account: "user@example.com", Scopes: []string{"repo"},
			Transport: states.Loopback, RedirectURI: engine.DefaultLoopbackRedirectURL, Deadline: &due,
		}),
		rec(2, states.URLIssued, states.Pending, states.AwaitingCallback, states.Data{}),
	}
	if finished {
		recs = append(recs,
			rec(3, states.ExchangeStarted, states.AwaitingCallback, states.AwaitingCallback, states.Data{CodeFingerprint: "hmac:9f86d081884c7d659a2feaa0"}),
			rec(4, states.ExchangeSucceeded, states.AwaitingCallback, states.Complete, states.Data{Reason: states.Exchanged, GrantedScopes: []string{"repo"}, TokenStored: true}),
		)
	}
	return recs
}

// buildLog appends flow(0) ... flow(n-1) to a new log at path, the flows in
// a shuffled order from many writers so that live flows sit among the
// history as they would in a real log. Live flows get a sealed verifier,
// as the engine leaves them. It writes without fsync: only the result is
// measured, not the build.
func buildLog(ctx context.Context, path string, n int, flow func(i int) []states.Record) error {
	log, err := openLog(path, true)
	if err != nil {
		return err
	}
	order := mrand.Perm(n)
	err = fanOut(ctx, 256, n, func(ctx context.Context, _, i int) error {
		recs := flow(order[i])
		var secrets map[string][]byte
		if !recs[len(recs)-1].To.Terminal() {
			secrets = map[string][]byte{"verifier/" + recs[0].Flow: []byte(genID())}
		}
		return log.Append(ctx, recs, secrets)
	})
	if cerr := log.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build %s: %w", filepath.Base(path), err)
	}
	return nil
}

// recovery measures item 2: the time to open the log and the engine with
// RecoveryLive live flows, with RecoveryHistory events of finished flows
// in the log and without. The two databases are built once; each run opens
// both, in alternating order, so the page cache favours neither.
func (b *Bench) recovery(ctx context.Context) ([]*Row, error) {
	s := b.Sizes
	row := &Row{Item: "2", Figure: fmt.Sprintf("open with %s live + %s history events", num(float64(s.RecoveryLive)), num(float64(s.RecoveryHistory))),
		Unit: "ms", Baseline: "same live flows, no history (ms)", Target: Target{AtMost, 1.5},
		Note: "2 times opening the log file and engine.Open together (what a restart costs), warm page cache; both databases are built once, then opened alternately"}
	dir, done, err := b.tempDir()
	if err != nil {
		return nil, err
	}
	defer done()
	// The same live flows go into both databases; Append fills in Seq, so
	// each database gets its own copy.
	live := make([][]states.Record, s.RecoveryLive)
	for i := range live {
		live[i] = genFlow(epoch, false)
	}
	liveFlow := func(i int) []states.Record { return append([]states.Record(nil), live[i]...) }
	withHistory := func(i int) []states.Record {
		if i < len(live) {
			return liveFlow(i)
		}
		return genFlow(epoch.Add(-time.Hour), true)
	}
	histPath, nonePath := filepath.Join(dir, "history.db"), filepath.Join(dir, "live-only.db")
	begin := time.Now()
	if err := buildLog(ctx, nonePath, len(live), liveFlow); err != nil {
		return nil, fmt.Errorf("item 2: %w", err)
	}
	if err := buildLog(ctx, histPath, len(live)+s.RecoveryHistory/4, withHistory); err != nil {
		return nil, fmt.Errorf("item 2: %w", err)
	}
	b.logf("item 2: built both databases in %s", time.Since(begin).Round(time.Millisecond))
	// One unmeasured open of each stores the engine's fingerprint key, a
	// one-time write, and warms the page cache for both alike.
	for _, p := range []string{nonePath, histPath} {
		if _, err := openEngineTimed(ctx, p, s.RecoveryLive); err != nil {
			return nil, fmt.Errorf("item 2: %w", err)
		}
	}
	for run := range b.Runs {
		var withHist, without time.Duration
		first, second := &withHist, &without
		p1, p2 := histPath, nonePath
		if run%2 == 1 {
			first, second, p1, p2 = second, first, p2, p1
		}
		if *first, err = openEngineTimed(ctx, p1, s.RecoveryLive); err != nil {
			return nil, fmt.Errorf("item 2, run %d: %w", run+1, err)
		}
		if *second, err = openEngineTimed(ctx, p2, s.RecoveryLive); err != nil {
			return nil, fmt.Errorf("item 2, run %d: %w", run+1, err)
		}
		row.Add(ms(withHist), ms(without))
		b.logf("item 2 run %d/%d: with history %s, without %s", run+1, b.Runs, withHist.Round(time.Microsecond), without.Round(time.Microsecond))
	}
	return []*Row{row}, nil
}

func ms(d time.Duration) float64 { return d.Seconds() * 1000 }

// openEngineTimed opens the log at path and an engine on it, checks that
// it recovered wantLive flows, and returns how long the two opens took.
func openEngineTimed(ctx context.Context, path string, wantLive int) (time.Duration, error) {
	clk := fakeclock.New(epoch.Add(time.Minute))
	begin := time.Now()
	log, err := openLog(path, false)
	if err != nil {
		return 0, err
	}
	defer log.Close()
	e, err := engine.Open(ctx, engineConfig(log, clk))
	if err != nil {
		return 0, fmt.Errorf("open engine on %s: %w", filepath.Base(path), err)
	}
	elapsed := time.Since(begin)
	live := e.Stats().Live
	if err := e.Close(); err != nil {
		return 0, fmt.Errorf("close engine: %w", err)
	}
	if live != wantLive {
		return 0, fmt.Errorf("engine on %s recovered %d live flows, want %d", filepath.Base(path), live, wantLive)
	}
	return elapsed, nil
}
