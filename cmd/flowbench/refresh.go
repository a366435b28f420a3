package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// refreshCallers is how many Token calls item 8 makes at once on one expired token.
const refreshCallers = 64

// providerLatency is how long item 8's token endpoint takes to answer a
// refresh: a real provider is a network round trip away (100 ms and more);
// 20 ms keeps the run short while the engine's own cost (two durable
// appends, the claim, the losers' reads) still shows in the ratio.
const providerLatency = 20 * time.Millisecond

// refreshEndpoint answers code exchanges as tokenEndpoint does and refresh
// requests after providerLatency with a new, rotated refresh token,
// counting them.
type refreshEndpoint struct {
	refreshes atomic.Int64
	n         atomic.Int64
}

func (p *refreshEndpoint) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil || form.Get("grant_type") != "refresh_token" {
		r.Body = io.NopCloser(bytes.NewReader(b))
		return tokenEndpoint{}.RoundTrip(r)
	}
	p.refreshes.Add(1)
	time.Sleep(providerLatency)
	body := fmt.Appendf(nil, `{"access_token":"bench-access-%d","token_type":"bearer","refresh_token":"bench-refresh-%d","expires_in":3600}`, p.n.Add(1), p.n.Load())
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: r,
	}, nil
}

// refresh is item 8: refresh single-flight. 64 concurrent Token calls on
// an expired token must make one token-endpoint request, on one engine
// and on two engines sharing one bbolt log (replicas share etcd the same
// way: a compare-and-set on the connection's flow), and the slowest call
// must take at most twice one lone refresh.
func (b *Bench) refresh(ctx context.Context) ([]*Row, error) {
	one := &Row{Item: "8a", Figure: fmt.Sprintf("token-endpoint requests, %d Token calls, 1 engine", refreshCallers), Unit: "count",
		Count: true, Target: Target{AtMost, 1}}
	two := &Row{Item: "8b", Figure: fmt.Sprintf("token-endpoint requests, %d Token calls, 2 engines", refreshCallers), Unit: "count",
		Count: true, Target: Target{AtMost, 1}, Note: "8b/8d: two engines in one process sharing one bbolt log (etcd is not run here)"}
	lat1 := &Row{Item: "8c", Figure: fmt.Sprintf("slowest of %d concurrent Token calls, 1 engine", refreshCallers), Unit: "ms",
		Baseline: "one lone refresh (ms)", Target: Target{AtMost, 2}}
	lat2 := &Row{Item: "8d", Figure: fmt.Sprintf("slowest of %d concurrent Token calls, 2 engines", refreshCallers), Unit: "ms",
		Baseline: "one lone refresh (ms)", Target: Target{AtMost, 2}}
	for run := range b.Runs {
		r, err := b.refreshRun(ctx)
		if err != nil {
			return nil, err
		}
		one.Fig, two.Fig = append(one.Fig, r.requests1), append(two.Fig, r.requests2)
		lat1.Add(ms(r.slowest1), ms(r.lone))
		lat2.Add(ms(r.slowest2), ms(r.lone))
		b.logf("8 run %d: requests %v / %v, lone refresh %v, slowest %v (1 engine) %v (2 engines)",
			run+1, r.requests1, r.requests2, r.lone, r.slowest1, r.slowest2)
	}
	return []*Row{one, two, lat1, lat2}, nil
}

type refreshResult struct {
	requests1, requests2     float64
	lone, slowest1, slowest2 time.Duration
}

// sharedBolt declares a bbolt log shared by the engines of one process
// (engine.Watcher). Its watch delivers nothing: token calls read the
// connection's flow from the log itself, and item 8 starts no flow on the
// second engine.
type sharedBolt struct{ engine.Log }

func (sharedBolt) Head(context.Context) (uint64, error) { return 0, nil }

func (sharedBolt) Watch(ctx context.Context, _ uint64, _ func([]states.Record)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (b *Bench) refreshRun(ctx context.Context) (refreshResult, error) {
	var res refreshResult
	dir, done, err := b.tempDir()
	if err != nil {
		return res, err
	}
	defer done()
	db, err := persist.Open(filepath.Join(dir, "flowd.db"), persist.Options{})
	if err != nil {
		return res, err
	}
	defer db.Close()
	clk := fakeclock.New(time.Now().UTC())
	ep := &refreshEndpoint{}
	// Declared shared, as etcdlog is, so each engine honours the other's
	// refresh claims instead of taking them for a stopped process's.
	cfg := engineConfig(sharedBolt{db}, clk)
	cfg.HTTPClient = &http.Client{Transport: ep}
	cfg.Retention = -1
	e1, err := engine.Open(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer e1.Close()
	e2, err := engine.Open(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer e2.Close()
	for _, who := range []string{"lone", "one", "two"} {
		if err := connect(ctx, e1, who); err != nil {
			return res, err
		}
	}
	clk.Advance(2 * time.Hour) // every token has expired
	begin := time.Now()
	if _, _, err := e1.Token(ctx, engine.TokenKey{Provider: providerName, Account: "lone"}); err != nil {
		return res, fmt.Errorf("lone refresh: %w", err)
	}
	res.lone = time.Since(begin)

	burst := func(account string, engines ...*engine.Engine) (float64, time.Duration, error) {
		before := ep.refreshes.Load()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		var firstErr error
		start := make(chan struct{})
		for i := range refreshCallers {
			wg.Go(func() {
				<-start
				t0 := time.Now()
				_, _, err := engines[i%len(engines)].Token(ctx, engine.TokenKey{Provider: providerName, Account: account})
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				slowest = max(slowest, d)
				if err != nil && firstErr == nil {
					firstErr = err
				}
			})
		}
		close(start)
		wg.Wait()
		return float64(ep.refreshes.Load() - before), slowest, firstErr
	}
	if res.requests1, res.slowest1, err = burst("one", e1); err != nil {
		return res, fmt.Errorf("64 Token calls on one engine: %w", err)
	}
	if res.requests2, res.slowest2, err = burst("two", e1, e2); err != nil {
		return res, fmt.Errorf("64 Token calls on two engines: %w", err)
	}
	return res, nil
}
