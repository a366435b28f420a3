package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Sizes are the workloads of one benchmark invocation.
type Sizes struct {
	// Workers is the concurrency of item 1 (flows in flight) and of every
	// raw bbolt baseline.
	Workers int
	// DurableFlows is how many start->callback->complete flows item 1 runs per run.
	DurableFlows int
	// NaiveOps is how many one-Update-per-transition writes the naive baseline does per run.
	NaiveOps int
	// RecoveryLive and RecoveryHistory size item 2: live flows, and events of finished flows.
	RecoveryLive    int
	RecoveryHistory int
	// LiveFlows is the number of live flows of items 3 and 7.
	LiveFlows int
	// WakeFlows is how many waited-on flows item 4 completes per run.
	WakeFlows int
	// APICalls is how many status calls item 6 makes per side per run.
	APICalls int
	// DeviceFlows is how many device flows item 8 watches polling for a minute.
	DeviceFlows int
}

// FullSizes are the sizes the issue states.
var FullSizes = Sizes{
	Workers: 64, DurableFlows: 12800, NaiveOps: 2000,
	RecoveryLive: 10_000, RecoveryHistory: 1_000_000,
	LiveFlows: 100_000, WakeFlows: 1000, APICalls: 20_000, DeviceFlows: 10_000,
}

// QuickSizes finish the whole table in a minute or two on two cores.
var QuickSizes = Sizes{
	Workers: 64, DurableFlows: 3200, NaiveOps: 400,
	RecoveryLive: 2000, RecoveryHistory: 200_000,
	LiveFlows: 20_000, WakeFlows: 400, APICalls: 10_000, DeviceFlows: 2000,
}

// TinySizes only check that every row is produced (the package's tests).
var TinySizes = Sizes{
	Workers: 8, DurableFlows: 32, NaiveOps: 16,
	RecoveryLive: 20, RecoveryHistory: 400,
	LiveFlows: 100, WakeFlows: 16, APICalls: 50, DeviceFlows: 20,
}

// Bench runs the comparisons.
type Bench struct {
	Sizes Sizes
	Runs  int
	// Dir holds the temporary databases; it should be on the disk flowd would use.
	Dir string
	// Only selects items by number ("1", "2", ...); empty runs all.
	Only map[string]bool
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (b *Bench) want(item string) bool { return len(b.Only) == 0 || b.Only[item] }

func (b *Bench) logf(format string, args ...any) {
	if b.Progress != nil {
		fmt.Fprintf(b.Progress, format+"\n", args...)
	}
}

// Run runs every selected item Runs times and returns the table's rows.
func (b *Bench) Run(ctx context.Context) ([]*Row, error) {
	if b.Runs < 1 {
		return nil, errors.New("flowbench: -runs must be at least 1")
	}
	var rows []*Row
	steps := []struct {
		items []string
		fn    func(context.Context) ([]*Row, error)
	}{
		{[]string{"1", "5"}, b.durable},
		{[]string{"2"}, b.recovery},
		{[]string{"3", "7"}, b.liveFlows},
		{[]string{"4"}, b.wakeup},
		{[]string{"6"}, b.api},
		{[]string{"8"}, b.refresh},
		{[]string{"9"}, b.deviceFlows},
	}
	for _, s := range steps {
		selected := false
		for _, it := range s.items {
			selected = selected || b.want(it)
		}
		if !selected {
			continue
		}
		rs, err := s.fn(ctx)
		if err != nil {
			return rows, err
		}
		for _, r := range rs {
			if b.want(r.Item[:1]) {
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}

// tempDir makes a directory for one run's databases under b.Dir.
func (b *Bench) tempDir() (string, func(), error) {
	d, err := os.MkdirTemp(b.Dir, "flowbench-")
	if err != nil {
		return "", nil, fmt.Errorf("make a temporary directory (set -dir to a writable one): %w", err)
	}
	return d, func() { _ = os.RemoveAll(d) }, nil
}

// providerName is the one provider every benchmark flow uses.
const providerName = "bench"

// tokenBody is what the in-process token endpoint answers: a token, at once.
var tokenBody = []byte(`{"access_token":"bench-access-token","token_type":"bearer","refresh_token":"bench-refresh","expires_in":3600}`)

// tokenEndpoint is the in-process token endpoint, an http.RoundTripper
// that answers at once, with no socket and no server between: item 1
// measures the engine and its log. It still reads the form the engine
// sent and refuses one without a code or a PKCE verifier, so the engine
// cannot pass by sending less, but it builds the response directly: a
// ResponseRecorder (a header map, a buffer, the header cloned into the
// response) cost the engine's side CPU that a real provider spends on
// its own machine and the baselines never pay.
type tokenEndpoint struct{}

// invalidGrant is tokenEndpoint's answer to a malformed exchange.
var invalidGrant = []byte(`{"error":"invalid_grant"}`)

func (tokenEndpoint) RoundTrip(r *http.Request) (*http.Response, error) {
	status, body := http.StatusOK, tokenBody
	var form url.Values
	var err error
	if r.Body != nil {
		var b []byte
		if b, err = io.ReadAll(r.Body); err == nil {
			form, err = url.ParseQuery(string(b))
		}
		_ = r.Body.Close()
	}
	if r.Method != http.MethodPost || err != nil || form.Get("code") == "" || form.Get("code_verifier") == "" {
		status, body = http.StatusBadRequest, invalidGrant
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}, nil
}

func engineConfig(log engine.Log, clk engine.Clock) engine.Config {
	return engine.Config{
		Log:   log,
		Clock: clk,
		Providers: []engine.Provider{{
			Name: providerName, AuthURL: "https://auth.bench.invalid/authorize", TokenURL: "https://auth.bench.invalid/token",
			AuthMethod: engine.AuthMethodClientSecretPost, ClientID: "bench-client", ClientSecret: "bench-secret", Scopes: []string{"repo"},
		}},
		HTTPClient: &http.Client{Transport: tokenEndpoint{}},
	}
}

// probe wraps a Log to count what the engine appends and, when asked,
// time every append and note when the append that ends a flow began.
type probe struct {
	engine.Log
	records atomic.Int64
	appends atomic.Int64

	// timed records latencies; with ended non-nil, also terminal appends.
	timed bool
	mu    sync.Mutex
	lat   []float64            // append latencies, seconds
	ended map[string]time.Time // flow -> when its terminal append began
}

func (p *probe) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	if !p.timed {
		err := p.Log.Append(ctx, recs, secrets)
		if err == nil {
			p.records.Add(int64(len(recs)))
			p.appends.Add(1)
		}
		return err
	}
	begin := time.Now()
	err := p.Log.Append(ctx, recs, secrets)
	d := time.Since(begin)
	if err != nil {
		return err
	}
	p.records.Add(int64(len(recs)))
	p.appends.Add(1)
	p.mu.Lock()
	p.lat = append(p.lat, d.Seconds())
	if n := len(recs); n > 0 && p.ended != nil && recs[n-1].To.Terminal() {
		p.ended[recs[n-1].Flow] = begin
	}
	p.mu.Unlock()
	return nil
}

// fanOut runs fn(worker, i) for i in [0, n) on workers goroutines and
// returns the first error.
func fanOut(ctx context.Context, workers, n int, fn func(ctx context.Context, worker, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, w, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// connect runs one flow start -> callback -> complete as account.
func connect(ctx context.Context, e *engine.Engine, account string) error {
	st, err := e.Start(ctx, engine.StartRequest{Provider: providerName, Account: account})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	f, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: "bench-code"})
	if err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	if f.State != states.Complete {
		return fmt.Errorf("flow %s ended %s (%s: %s), want complete", states.ShortID(f.ID), f.State, f.Reason, f.Message)
	}
	return nil
}

// fileBytes returns a file's apparent size and the bytes the disk holds for it.
func fileBytes(path string) (size, allocated int64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", filepath.Base(path), err)
	}
	return fi.Size(), allocatedBytes(fi), nil
}

func (p *probe) medianLatency() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return median(p.lat)
}
