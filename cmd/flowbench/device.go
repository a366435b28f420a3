package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/flowdhq/flowd/states"
)

// Item 9: device flows (RFC 8628) polling on the engine's one timer.
const (
	// devicePollInterval is the interval the provider names.
	devicePollInterval = 5 * time.Second
	// deviceWindow is how long the flows are watched polling.
	deviceWindow = time.Minute
	// deviceSlowDownAt is the poll the provider answers slow_down to, once
	// per flow, so that the minute holds one poll record per flow.
	deviceSlowDownAt = 6
)

// deviceFlows measures item 9. Each run starts DeviceFlows device flows on
// a durable log and a fake clock, one every interval/DeviceFlows, so every
// flow polls at instants of its own; then it steps the clock through a
// minute, one stagger step per Advance, and counts the engine's timer
// wake-ups and the polls that reached the provider (an in-process device
// and token endpoint: authorization_pending, and slow_down once per flow
// at its 6th poll). What is due is computed here from the schedule RFC
// 8628 sets (every 5 s, 10 s after the slow_down), not from the engine.
func (b *Bench) deviceFlows(ctx context.Context) ([]*Row, error) {
	n := b.Sizes.DeviceFlows
	extra := &Row{Item: "9a", Figure: fmt.Sprintf("timer wake-ups beyond the polls due, %s device flows, 1 min", num(float64(n))), Unit: "count",
		Count: true, Target: Target{AtMost, 0},
		Note: "9a-9c run on a fake clock, stepped through one minute; each flow polls at instants of its own, so every due poll is one wake-up (9a: wake-ups minus due poll instants)"}
	polls := &Row{Item: "9b", Figure: "polls made in the minute", Unit: "count", Baseline: "polls due by the RFC 8628 schedule"}
	bytesRow := &Row{Item: "9c", Figure: "poll record bytes per flow in the minute", Unit: "B",
		Baseline: "one poll_slowed record (B)", Note: "authorization_pending polls write nothing; the one slow_down per flow writes one poll_slowed record"}
	for run := range b.Runs {
		dir, done, err := b.tempDir()
		if err != nil {
			return nil, err
		}
		r, err := b.deviceRun(ctx, dir, n)
		done()
		if err != nil {
			return nil, fmt.Errorf("item 9, run %d: %w", run+1, err)
		}
		extra.Fig = append(extra.Fig, float64(r.wakeups-r.dueInstants))
		polls.Add(float64(r.polls), float64(r.due))
		bytesRow.Add(r.recordBytes/float64(n), float64(r.slowedSize))
		b.logf("item 9 run %d/%d: %d flows; %d wake-ups for %d due poll instants; %d polls made, %d due; %d records (%.0f B/flow) in the minute",
			run+1, b.Runs, n, r.wakeups, r.dueInstants, r.polls, r.due, r.records, r.recordBytes/float64(n))
	}
	return []*Row{extra, polls, bytesRow}, nil
}

type deviceResult struct {
	wakeups, dueInstants int64
	polls, due           int64
	records              int64
	recordBytes          float64
	slowedSize           int
}

func (b *Bench) deviceRun(ctx context.Context, dir string, n int) (deviceResult, error) {
	var r deviceResult
	log, err := openLog(filepath.Join(dir, "flowd.db"), true)
	if err != nil {
		return r, err
	}
	defer log.Close()
	counter := &byteCounter{Log: log}
	clk := fakeclock.New(epoch)
	dev := &deviceEndpoint{polls: map[string]int{}}
	cfg := engineConfig(counter, clk)
	cfg.Providers[0].DeviceAuthURL = "https://auth.bench.invalid/device"
	cfg.HTTPClient = &http.Client{Transport: dev}
	cfg.Retention = -1 // no hourly pruner in the way
	e, err := engine.Open(ctx, cfg)
	if err != nil {
		return r, err
	}
	defer e.Close()

	step := devicePollInterval / time.Duration(n)
	starts := make([]time.Time, n)
	var sample string
	for i := range n {
		starts[i] = clk.Now()
		st, err := e.Start(ctx, engine.StartRequest{Provider: providerName, Account: fmt.Sprintf("user-%d", i), Transport: states.Device})
		if err != nil {
			return r, fmt.Errorf("start device flow %d: %w", i, err)
		}
		if i == 0 {
			sample = st.ID
		}
		clk.Advance(step)
	}
	// The window opens once every flow is started.
	from := clk.Now()
	to := from.Add(deviceWindow)
	for _, s := range starts {
		for k := 1; ; k++ {
			at := s.Add(time.Duration(k) * devicePollInterval)
			if k > deviceSlowDownAt {
				at = s.Add(deviceSlowDownAt*devicePollInterval + time.Duration(k-deviceSlowDownAt)*(devicePollInterval+5*time.Second))
			}
			if at.After(to) {
				break
			}
			if at.After(from) {
				r.due++
			}
		}
	}
	r.dueInstants = r.due // every flow polls at instants of its own
	wake0, polls0 := e.Stats().TimerWakeups, dev.count.Load()
	recs0, bytes0 := counter.records.Load(), counter.bytes.Load()
	for clk.Now().Before(to) {
		clk.Advance(min(step, to.Sub(clk.Now())))
	}
	r.wakeups = e.Stats().TimerWakeups - wake0
	r.polls = dev.count.Load() - polls0
	r.records = counter.records.Load() - recs0
	r.recordBytes = float64(counter.bytes.Load() - bytes0)
	if live := e.Stats().Live; live != n {
		return r, fmt.Errorf("%d of %d device flows live after the minute", live, n)
	}
	h, err := log.History(ctx, sample)
	if err != nil || len(h) < 3 || h[2].Event != states.PollSlowed {
		return r, fmt.Errorf("read back a slowed device flow (%d records): %v", len(h), err)
	}
	enc, err := h[2].Encode()
	if err != nil {
		return r, err
	}
	r.slowedSize = len(enc)
	return r, nil
}

// byteCounter counts the records appended and their encoded bytes.
type byteCounter struct {
	engine.Log
	records, bytes atomic.Int64
}

func (c *byteCounter) Append(ctx context.Context, recs []states.Record, secrets map[string][]byte) error {
	err := c.Log.Append(ctx, recs, secrets)
	if err == nil {
		for _, rec := range recs {
			if b, err := rec.Encode(); err == nil {
				c.bytes.Add(int64(len(b)))
			}
		}
		c.records.Add(int64(len(recs)))
	}
	return err
}

// deviceEndpoint is an in-process device authorization and token endpoint:
// a fresh device code per request, then authorization_pending to every
// poll but each code's deviceSlowDownAt-th, which is slow_down.
type deviceEndpoint struct {
	next  atomic.Int64
	count atomic.Int64
	mu    sync.Mutex
	polls map[string]int
}

func (d *deviceEndpoint) RoundTrip(r *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(r.Body)
	_ = r.Body.Close()
	form, _ := url.ParseQuery(string(b))
	status := http.StatusBadRequest
	var body any
	switch {
	case r.URL.Path == "/device":
		id := d.next.Add(1)
		status = http.StatusOK
		body = map[string]any{"device_code": fmt.Sprintf("bench-device-%d", id), "user_code": fmt.Sprintf("B-%d", id),
			"verification_uri": "https://auth.bench.invalid/activate", "expires_in": 3600, "interval": int(devicePollInterval / time.Second)}
	case form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
		d.count.Add(1)
		d.mu.Lock()
		d.polls[form.Get("device_code")]++
		k := d.polls[form.Get("device_code")]
		d.mu.Unlock()
		code := "authorization_pending"
		if k == deviceSlowDownAt {
			code = "slow_down"
		}
		body = map[string]string{"error": code}
	default:
		body = map[string]string{"error": "unsupported_grant_type"}
	}
	out, _ := json.Marshal(body)
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(out)),
		ContentLength: int64(len(out)), Request: r,
	}, nil
}
