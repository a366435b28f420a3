package engine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/engine/fakeclock"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// handlerTransport answers HTTP requests with a handler in-process, so a
// benchmark measures the engine and its log, not loopback TCP.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	if r.Body != nil {
		defer r.Body.Close()
	}
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// benchTokenEndpoint issues a token for any code.
var benchTokenEndpoint = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"access_token":"at","token_type":"bearer","refresh_token":"rt","expires_in":3600,"scope":"repo"}`)
})

// BenchmarkTransitions runs flows start -> callback -> complete, 64 at a
// time, and reports durable transitions per second: every flow appends four
// records (created, url_issued, exchange_started, exchange_succeeded) in
// three appends, plus the token's sealed write.
func BenchmarkTransitions(b *testing.B) {
	for _, bk := range []struct {
		name string
		open func(b *testing.B) engine.Log
	}{
		{"memlog", func(*testing.B) engine.Log { return memlog.New() }},
		{"bbolt", func(b *testing.B) engine.Log {
			db, err := persist.Open(filepath.Join(b.TempDir(), "flowd.db"), persist.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			return db
		}},
	} {
		b.Run(bk.name, func(b *testing.B) { benchTransitions(b, bk.open(b), 64) })
	}
}

func benchTransitions(b *testing.B, log engine.Log, workers int) {
	ctx := context.Background()
	var transitions atomic.Int64
	e, err := engine.Open(ctx, engine.Config{
		Log:        log,
		HTTPClient: &http.Client{Transport: handlerTransport{benchTokenEndpoint}},
		Providers: []engine.Provider{{Name: "gh", AuthURL: "https://auth.example.test/authorize", TokenURL: "https://token.example.test/token",
			AuthMethod: engine.AuthMethodClientSecretPost, ClientID: "id", ClientSecret: "secret"}},
		Hooks: engine.Hooks{Transition: func(states.Record, states.Flow) { transitions.Add(1) }},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				st, err := e.Start(ctx, engine.StartRequest{Provider: "gh", Account: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					b.Error(err)
					return
				}
				f, err := e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: "code"})
				if err != nil || f.State != states.Complete {
					b.Errorf("callback: %v (%s)", err, f.State)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(transitions.Load())/b.Elapsed().Seconds(), "transitions/s")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/flow")
}

// nullLog keeps nothing: it lets a measurement see the engine's own memory
// without the log's.
type nullLog struct{ seq atomic.Uint64 }

func (l *nullLog) Append(_ context.Context, recs []states.Record, _ map[string][]byte) error {
	for i := range recs {
		recs[i].Seq = l.seq.Add(1)
	}
	return nil
}
func (l *nullLog) History(context.Context, string) ([]states.Record, error) { return nil, nil }
func (l *nullLog) Live(context.Context, func([]states.Record) error) error  { return nil }
func (l *nullLog) Scan(context.Context, uint64, func(states.Record) error) error {
	return nil
}
func (l *nullLog) Secret(context.Context, string) ([]byte, bool, error) { return nil, false, nil }
func (l *nullLog) Prune(context.Context, time.Time) (int, error)        { return 0, nil }

// liveFlowHeap measures the engine's heap per live flow with n flows of
// distinct accounts (the worst case: one owner entry each).
func liveFlowHeap(tb testing.TB, n int) float64 {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Config{Log: &nullLog{}, Retention: -1, Clock: fakeclock.New(epoch),
		Providers: []engine.Provider{{Name: "gh", AuthURL: "https://auth.example.test/authorize", TokenURL: "https://token.example.test/token",
			AuthMethod: engine.AuthMethodNone, ClientID: "id", Scopes: []string{"repo", "read:user"}}}})
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	accounts := make([]string, n)
	for i := range accounts {
		accounts[i] = fmt.Sprintf("user-%08d@example.com", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, p := range accounts {
		if _, err := e.Start(ctx, engine.StartRequest{Provider: "gh", Account: p}); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if e.Stats().Live != n {
		tb.Fatalf("%d live flows, want %d", e.Stats().Live, n)
	}
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkLiveFlowHeap reports the engine's heap per live flow.
func BenchmarkLiveFlowHeap(b *testing.B) {
	var per float64
	for b.Loop() {
		per = liveFlowHeap(b, 20000)
	}
	b.ReportMetric(per, "B/liveflow")
}

// The performance budget: at most 2 KiB of heap per live flow.
func TestLiveFlowHeapBudget(t *testing.T) {
	per := liveFlowHeap(t, 10000)
	t.Logf("%.0f B of heap per live flow", per)
	assert.LessOrEqual(t, per, 2048.0)
}

// BenchmarkOpen measures a restart (open the bbolt log, recover the
// engine) with 100 live flows, over an empty history and over 20000
// finished flows: open time must follow live flows, not history.
func BenchmarkOpen(b *testing.B) {
	for _, finished := range []int{0, 20000} {
		b.Run(fmt.Sprintf("live=100/finished=%d", finished), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "flowd.db")
			clk := fakeclock.New(epoch)
			cfg := engine.Config{
				Clock: clk, Retention: -1,
				HTTPClient: &http.Client{Transport: handlerTransport{benchTokenEndpoint}},
				Providers: []engine.Provider{{Name: "gh", AuthURL: "https://auth.example.test/authorize", TokenURL: "https://token.example.test/token",
					AuthMethod: engine.AuthMethodNone, ClientID: "id"}},
			}
			// Fill the log quickly (no fsync); the timed opens are durable ones.
			db, err := persist.Open(path, persist.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			cfg.Log = db
			e, err := engine.Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(finished+100); i = next.Add(1) {
						st, err := e.Start(context.Background(), engine.StartRequest{Provider: "gh", Account: fmt.Sprint(i)})
						if err != nil {
							b.Error(err)
							return
						}
						if i > 100 {
							if _, err := e.Callback(context.Background(), engine.CallbackParams{State: st.ID, Code: "c"}); err != nil {
								b.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			_ = e.Close()
			_ = db.Close()
			b.ResetTimer()
			for b.Loop() {
				db, err := persist.Open(path, persist.Options{})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Log = db
				e, err := engine.Open(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if e.Stats().Live != 100 {
					b.Fatalf("%d live flows after open, want 100", e.Stats().Live)
				}
				_ = e.Close()
				_ = db.Close()
			}
		})
	}
}

// BenchmarkTokenWithoutAccount is an assistant's tool asking for its token
// by provider alone while tokens are stored under the account the
// provider identified, as flowd stores them: the engine must find the one
// account without reading the log's history. history earlier connects
// (reconnects of another provider's account, each replacing the last)
// sit in the log; compare "unnamed" with "named" (the account given) at
// each size: the ratio should not grow with history.
func BenchmarkTokenWithoutAccount(b *testing.B) {
	for _, history := range []int{1000, 10000} {
		ctx := context.Background()
		var next atomic.Value
		e, err := engine.Open(ctx, engine.Config{
			Log: memlog.New(), Clock: fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), Retention: -1,
			HTTPClient: &http.Client{Transport: handlerTransport{benchTokenEndpoint}},
			Providers: []engine.Provider{
				{Name: "gh", AuthURL: "https://gh.example/auth", TokenURL: "https://gh.example/token", ClientID: "c", AuthMethod: engine.AuthMethodNone},
				{Name: "other", AuthURL: "https://o.example/auth", TokenURL: "https://o.example/token", ClientID: "c", AuthMethod: engine.AuthMethodNone},
			},
			Identify: func(context.Context, engine.Provider, *oauth2.Token, string) (engine.Identity, error) {
				return engine.Identity{Account: next.Load().(string)}, nil
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		connect := func(provider, account string) {
			next.Store(account)
			st, err := e.Start(ctx, engine.StartRequest{Provider: provider})
			if err == nil {
				_, err = e.Callback(ctx, engine.CallbackParams{State: st.ID, Code: "code"})
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		for i := range history {
			connect("other", fmt.Sprintf("user-%d", i%10))
		}
		connect("gh", "octocat")
		// The first call after Open builds the index from one scan.
		if _, _, err := e.Token(ctx, engine.TokenKey{Provider: "gh"}); err != nil {
			b.Fatal(err)
		}
		for _, named := range []bool{true, false} {
			key := engine.TokenKey{Provider: "gh"}
			name := "unnamed"
			if named {
				key.Account, name = "octocat", "named"
			}
			b.Run(fmt.Sprintf("history=%d/%s", history, name), func(b *testing.B) {
				for b.Loop() {
					if _, _, err := e.Token(ctx, key); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		_ = e.Close()
	}
}
