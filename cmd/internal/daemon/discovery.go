package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/engine"
)

// An OIDC issuer that does not answer at start-up must not stop flowd for
// every other provider. flowd starts without it, shows it unavailable (with
// the reason) in GET /v1/providers, refuses to start flows for it with
// provider_unavailable, and retries its discovery in the background with
// capped, jittered backoff until it answers; the provider is then added to
// the engine without a restart.

// Discovery retry timing.
const (
	// StartupDiscoveryTimeout bounds the first discovery of every issuer
	// at start-up (they run in parallel): an issuer that is down delays
	// flowd's start by at most this, then is retried in the background.
	StartupDiscoveryTimeout = 5 * time.Second
	// discoveryRetryBase and discoveryRetryCap bound DefaultBackoff.
	discoveryRetryBase = time.Second
	discoveryRetryCap  = 5 * time.Minute
)

// Backoff says how long to wait before retry n (1 is the first retry
// after the failed start-up attempt).
type Backoff func(retry int) time.Duration

// DefaultBackoff doubles from 1 s up to 5 min, each wait drawn between
// half and all of that, so flowds restarted together do not knock on a
// recovering issuer in step.
func DefaultBackoff(retry int) time.Duration {
	d := discoveryRetryCap
	if retry < 20 {
		d = min(discoveryRetryBase<<max(retry-1, 0), discoveryRetryCap)
	}
	return d/2 + rand.N(d/2+1)
}

// discovery retries the OIDC discovery of providers whose issuer did not
// answer, and adds each to the engine once it does. It is a server.ProviderStatus.
type discovery struct {
	client  *http.Client
	timeout time.Duration
	backoff Backoff
	clock   engine.Clock
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[string]*pendingProvider
	// found are the providers discovered after start-up, by name.
	found map[string]config.Provider
}

// pendingProvider is a provider whose issuer has not answered yet.
type pendingProvider struct {
	cfg      config.Provider
	since    time.Time
	attempts int
	lastErr  string
	next     time.Time
}

// systemClock is the clock of discovery without an injected one.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) engine.Timer {
	return time.AfterFunc(d, f)
}

func newDiscovery(client *http.Client, backoff Backoff, clock engine.Clock, lg *slog.Logger) *discovery {
	if backoff == nil {
		backoff = DefaultBackoff
	}
	if clock == nil {
		clock = systemClock{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &discovery{
		client: client, timeout: config.DefaultDiscoveryTimeout, backoff: backoff, clock: clock, log: lg,
		ctx: ctx, cancel: cancel, pending: map[string]*pendingProvider{}, found: map[string]config.Provider{},
	}
}

// resolve discovers every issuer-configured provider of cfg at once, each
// bounded by timeout, and fills in the endpoints of those that answered.
// The others are kept as pending and returned by name; cfg.Providers keeps
// them with empty endpoints.
func (d *discovery) resolve(ctx context.Context, cfg *config.Config, timeout time.Duration) []string {
	errs := make([]error, len(cfg.Providers))
	var wg sync.WaitGroup
	for i := range cfg.Providers {
		if cfg.Providers[i].Issuer == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = config.Discover(ctx, d.client, timeout, &cfg.Providers[i])
		}()
	}
	wg.Wait()
	var failed []string
	now := d.clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, err := range errs {
		if err == nil {
			continue
		}
		p := cfg.Providers[i]
		d.pending[p.Name] = &pendingProvider{cfg: p, since: now, attempts: 1, lastErr: err.Error()}
		failed = append(failed, p.Name)
	}
	return failed
}

// start retries every pending provider in the background, adding each to
// e once its issuer answers. Close stops it.
func (d *discovery) start(e interface{ AddProvider(engine.Provider) error }) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range d.pending {
		d.wg.Add(1)
		go d.retry(e, name)
	}
}

// retry is the background loop of one pending provider.
func (d *discovery) retry(e interface{ AddProvider(engine.Provider) error }, name string) {
	defer d.wg.Done()
	for n := 1; ; n++ {
		wait := d.backoff(n)
		d.mu.Lock()
		p := d.pending[name]
		p.next = d.clock.Now().Add(wait)
		issuer, lastErr := p.cfg.Issuer, p.lastErr
		cfg := p.cfg
		d.mu.Unlock()
		d.log.Warn("provider unavailable: its OIDC issuer did not answer discovery; retrying in the background",
			"provider", name, "issuer", issuer, "attempts", n, "retry_in", wait.Round(time.Millisecond), "err", lastErr)

		due := make(chan struct{})
		t := d.clock.AfterFunc(wait, func() { close(due) })
		select {
		case <-d.ctx.Done():
			t.Stop()
			return
		case <-due:
		}

		err := config.Discover(d.ctx, d.client, d.timeout, &cfg)
		if err == nil {
			err = e.AddProvider(cfg.Engine())
			if errors.Is(err, engine.ErrProviderExists) {
				err = nil // configured meanwhile (a config reload): nothing left to add
			}
			if err != nil {
				err = fmt.Errorf("the discovered endpoints were refused: %w", err)
			}
		}
		if d.ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		if err == nil {
			delete(d.pending, name)
			d.found[name] = cfg
			d.mu.Unlock()
			d.log.Info("provider available: its OIDC issuer answered discovery", "provider", name, "issuer", issuer, "attempts", n+1)
			return
		}
		p.attempts++
		p.lastErr = err.Error()
		d.mu.Unlock()
	}
}

// Close stops the retries and waits for them; a pending provider stays
// unavailable.
func (d *discovery) Close() {
	d.cancel()
	d.wg.Wait()
}

// Unavailable implements ProviderStatus.
func (d *discovery) Unavailable(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.pending[name]
	if !ok {
		return "", false
	}
	next := "soon"
	if left := p.next.Sub(d.clock.Now()); !p.next.IsZero() && left > 0 {
		next = "in " + left.Round(time.Second).String()
	}
	return fmt.Sprintf("provider %q is unavailable: its OIDC issuer %s has not answered discovery (%d attempt(s) since %s; last error: %s). flowd keeps retrying (next attempt %s) and adds %s without a restart once the issuer answers; see: flowctl providers",
		name, p.cfg.Issuer, p.attempts, p.since.Local().Format(time.TimeOnly), p.lastErr, next, name), true
}

// Describe implements ProviderStatus.
func (d *discovery) Describe(ps []wire.Provider) []wire.Provider {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := slices.Clone(ps)
	for i, p := range out {
		if pp, ok := d.pending[p.Name]; ok {
			out[i].Status = wire.ProviderUnavailable
			out[i].Unavailable = &wire.Unavailability{
				Reason: pp.lastErr, Since: pp.since.UTC(), Attempts: pp.attempts, NextAttempt: pp.next.UTC(),
			}
			continue
		}
		if f, ok := d.found[p.Name]; ok {
			out[i] = WireProviders([]config.Provider{f})[0]
		}
		out[i].Status = wire.ProviderAvailable
	}
	return out
}

// pendingNames lists the pending providers, for logs.
func (d *discovery) pendingNames() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.pending))
	for n := range d.pending {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
