package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// Defaults of Config.
const (
	DefaultTTL                 = 5 * time.Minute
	DefaultExchangeTimeout     = 30 * time.Second
	DefaultRetention           = 7 * 24 * time.Hour
	DefaultLoopbackRedirectURL = "http://127.0.0.1:8085/oauth/callback"
	// CallbackPath is the path of every transport's redirect URI.
	CallbackPath = "/oauth/callback"
	// LaunchPath is the path of a flow's launch link on the loopback
	// listener; the link's value is its query parameter LaunchParam.
	LaunchPath  = "/oauth/launch"
	LaunchParam = "t"
	// DefaultLaunchTTL is how long a launch link may be opened.
	DefaultLaunchTTL = 30 * time.Second
)

// pruneEvery is how often finished flows past retention are deleted.
const pruneEvery = time.Hour

// Secret keys in the Log.
const (
	verifierKeyPrefix = "verifier/"
	nonceKeyPrefix    = "nonce/"
	fingerprintKey    = "engine/fingerprint-key"
)

// Engine runs connect flows. It is safe for concurrent use.
//
// Every transition is appended durably to the Log before any caller learns
// of it. Live flows are held in memory, one small struct each; finished
// flows are read back from the Log on demand.
type Engine struct {
	log    Log
	tokens TokenStore
	clock  Clock
	rand   io.Reader
	logger *slog.Logger
	hooks  Hooks
	http   *http.Client
	// providers is the current providerSet; provMu serializes the
	// writers that replace it (readers only load it).
	providers atomic.Pointer[providerSet]
	provMu    sync.Mutex
	cfg       Config
	fpKey     []byte
	// fpMACs pools HMAC states keyed with fpKey: keying one hashes the
	// key twice and allocates, on every callback.
	fpMACs sync.Pool

	mu      sync.Mutex
	live    map[string]*liveFlow
	owners  map[ownerKey]map[string]*liveFlow
	due     deadlineHeap
	armed   Timer
	armedAt time.Time
	closed  bool
	pruner  Timer
	// starting holds the flows this engine is starting, so the watch of a
	// shared log does not adopt them before Start does.
	starting map[string]bool
	// launches are the launch links handed out and not yet expired, in
	// the order they expire (one TTL for all): swept from the front on
	// every new link and every use, so the map never outgrows one TTL's
	// worth of starts.
	launches     map[string]*launch
	launchQueue  []*launch
	launchPrefix string

	// shared is the Log as a Watcher when several engines share it; nil
	// otherwise. stopWatch and watchDone end and await its watch.
	shared Watcher
	// claims is the shared Log as a Claimer, nil when it is not one (or
	// the Log is not shared): then only the engine that started a device
	// flow polls it.
	claims    Claimer
	stopWatch context.CancelFunc
	watchDone chan struct{}

	closing chan struct{}
	// background bounds the engine's own work (retention), cancelled by
	// Close so a prune scanning a large log does not hold Close up.
	background     context.Context
	stopBackground context.CancelFunc
	inflight       sync.WaitGroup
	wakeups        atomic.Int64
	// mcp holds the providers of MCP connections by resource URL (guarded
	// by mcpMu, which also serializes updates of their sealed index).
	mcpMu sync.Mutex
	mcp   map[string]*provider
	// mcpStarting holds one *sync.Mutex per MCP resource URL, held while
	// a Start discovers and registers for it.
	mcpStarting sync.Map
	// conns indexes the connections that hold a token (connindex.go).
	conns connIndex
	// refreshing holds one *sync.Mutex per TokenKey: refreshes of one
	// token are serialized, other tokens are not held up behind them.
	refreshing sync.Map
	// ignoring serializes the late callbacks this engine records on one
	// finished flow (ignoreFinished). Each appends after the flow's last
	// record; concurrent ones would only make each other lose the
	// append's compare-and-set and run out of retries.
	ignoring flowLocks
}

type provider struct {
	Provider
	oauth oauth2.Config
	// client is the per-start client (StartRequest.Client) that replaced
	// the configured one in Provider and oauth; nil for the configured one.
	client *sealedClient
}

// ownerKey is who a flow connects: a new Start for the same provider and
// account supersedes the live flows of its owner.
type ownerKey struct{ provider, account string }

// liveFlow is a non-terminal flow. mu serializes its transitions; done is
// closed when it becomes terminal, which wakes every Wait at once.
type liveFlow struct {
	mu   sync.Mutex
	flow states.Flow
	done chan struct{}
	// born is the log's Seq of the flow's created record. It orders flows
	// the same way on every engine sharing a log, so two racing Starts of
	// one owner (even on two replicas) supersede only the older flow,
	// never each other.
	born uint64
	// wakeAt and index place the flow in the deadline heap (index -1: not
	// in it). Both are guarded by Engine.mu, not mu.
	wakeAt time.Time
	index  int
	// exchanging is true while this engine is calling the token endpoint
	// for the flow (guarded by mu). flow.Exchanging without it means the
	// exchange is over but its outcome could not be recorded.
	exchanging bool
	// exchangeSince is when the flow's exchange started (guarded by mu),
	// so a shared log's engines can tell an exchange lost with the engine
	// that ran it.
	exchangeSince time.Time
	// verifier is the PKCE verifier of a flow this engine started, kept
	// (guarded by mu) until its code is exchanged or it ends, so the
	// callback need not read it back from the log: on the bbolt log that
	// read was a read transaction and an AES-GCM open per connect. It is
	// "" for flows loaded from the log (after a restart, or started by
	// another engine on a shared log), whose callback reads the sealed
	// copy, always written with the flow's first records. Memory is not
	// the log: the process holds the key that opens every sealed secret.
	verifier string
	// dev is the poll state of a device flow this engine may poll (its
	// fields guarded by mu; the pointer itself is set before the flow is
	// published and never changes); nil for the other transports, and for
	// device flows read from a shared log that is not a Claimer (only the
	// engine that started such a flow polls it; see pollsDevice).
	dev *deviceState
	// nonce is the OpenID Connect nonce of a flow this engine started,
	// kept like verifier (its sealed copy is read otherwise).
	nonce string
	// perStart: the flow was started with a StartRequest.Client (its
	// created record says so), whose sealed copy its exchange must use.
	perStart bool
	// client is that client for a flow this engine started, kept like
	// verifier (its sealed copy is read otherwise).
	client *sealedClient
	// owner is the account the flow was started for (guarded by
	// Engine.mu): its key in Engine.owners.
	owner string
}

// Open recovers the engine from cfg.Log and starts its timers. Flows whose
// history ends in exchange_started become error(exchange_interrupted); flows
// whose deadline passed while no engine ran become
// expired(expired_while_down); the rest are re-armed.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Log == nil {
		return nil, errors.New("engine: open: Config.Log is required")
	}
	e := &Engine{
		log:      cfg.Log,
		tokens:   cfg.Tokens,
		clock:    cfg.Clock,
		rand:     cfg.Rand,
		logger:   cfg.Logger,
		hooks:    cfg.Hooks,
		http:     cfg.HTTPClient,
		live:     map[string]*liveFlow{},
		owners:   map[ownerKey]map[string]*liveFlow{},
		starting: map[string]bool{},
		mcp:      map[string]*provider{},
		launches: map[string]*launch{},
		closing:  make(chan struct{}),
	}
	e.background, e.stopBackground = context.WithCancel(context.Background())
	e.shared, _ = cfg.Log.(Watcher)
	if e.shared != nil {
		e.claims, _ = cfg.Log.(Claimer)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.ExchangeTimeout <= 0 {
		cfg.ExchangeTimeout = DefaultExchangeTimeout
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.LoopbackRedirectURL == "" {
		cfg.LoopbackRedirectURL = DefaultLoopbackRedirectURL
	}
	if cfg.ManualRedirectURL == "" {
		cfg.ManualRedirectURL = cfg.LoopbackRedirectURL
	}
	if cfg.LaunchTTL <= 0 {
		cfg.LaunchTTL = DefaultLaunchTTL
	}
	lb, err := url.Parse(cfg.LoopbackRedirectURL)
	if err != nil || lb.Host == "" {
		return nil, fmt.Errorf("engine: open: LoopbackRedirectURL %q is not an absolute URL", cfg.LoopbackRedirectURL)
	}
	e.launchPrefix = (&url.URL{Scheme: lb.Scheme, Host: lb.Host, Path: LaunchPath}).String() + "?" + LaunchParam + "="
	e.cfg = cfg
	if e.tokens == nil {
		e.tokens = &logTokens{log: cfg.Log}
	}
	if e.clock == nil {
		e.clock = systemClock{}
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if e.http == nil {
		e.http = &http.Client{Timeout: cfg.ExchangeTimeout}
	}
	set, err := newProviderSet(cfg.Providers)
	if err != nil {
		return nil, fmt.Errorf("engine: open: %w", err)
	}
	e.providers.Store(set)
	if err := e.loadFingerprintKey(ctx); err != nil {
		return nil, err
	}
	var head uint64
	if e.shared != nil {
		// Watch from before recovery reads the live flows, so nothing
		// committed elsewhere in between is missed (what is seen twice is
		// skipped).
		var err error
		if head, err = e.shared.Head(ctx); err != nil {
			return nil, fmt.Errorf("engine: open: read the shared log's head: %w", err)
		}
	}
	if err := e.recover(ctx); err != nil {
		// Recovery may have re-armed flows before it failed: stop the
		// timer, or it would later write to a log the caller gave up on,
		// perhaps under a newer engine.
		_ = e.Close()
		return nil, err
	}
	if e.shared != nil {
		e.follow(head)
	}
	if cfg.Retention > 0 {
		// In the background: finding the connections retention must keep
		// reads the whole log, and Open must cost the live flows only
		// (flowbench item 2). The hourly schedule starts now, as before.
		e.mu.Lock()
		e.pruner = e.clock.AfterFunc(pruneEvery, e.prune)
		e.mu.Unlock()
		go e.pruneOnce()
	}
	return e, nil
}

func validateProvider(p Provider) error {
	if p.Name == "" {
		return errors.New("a provider has no name")
	}
	for field, raw := range map[string]string{"auth URL": p.AuthURL, "token URL": p.TokenURL} {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("provider %q: %s %q is not an absolute http(s) URL", p.Name, field, raw)
		}
	}
	if p.DeviceAuthURL != "" {
		if u, err := url.Parse(p.DeviceAuthURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("provider %q: device authorization URL %q is not an absolute http(s) URL", p.Name, p.DeviceAuthURL)
		}
	}
	if p.ClientID == "" {
		return fmt.Errorf("provider %q: no client id", p.Name)
	}
	if p.RequireIssuer && p.Issuer == "" {
		return fmt.Errorf("provider %q: RequireIssuer needs Issuer, the identifier the redirect's iss must equal", p.Name)
	}
	return checkAuthMethod(p)
}

func (e *Engine) loadFingerprintKey(ctx context.Context) error {
	key, ok, err := e.log.Secret(ctx, fingerprintKey)
	if err != nil {
		return fmt.Errorf("engine: open: read fingerprint key: %w", err)
	}
	if !ok || len(key) != 32 {
		key = make([]byte, 32)
		if _, err := io.ReadFull(e.rand, key); err != nil {
			return fmt.Errorf("engine: open: make fingerprint key: %w", err)
		}
		if err := e.log.Append(ctx, nil, map[string][]byte{fingerprintKey: key}); err != nil {
			return fmt.Errorf("engine: open: store fingerprint key: %w", err)
		}
		// Engines sharing a log may have drawn keys at once: all use the
		// one that landed last.
		if stored, ok, err := e.log.Secret(ctx, fingerprintKey); err == nil && ok && len(stored) == 32 {
			key = stored
		}
	}
	e.fpKey = key
	return nil
}

// Close stops the timers and waits for in-flight transitions and exchanges.
// Waiters return ErrClosed. It does not close the Log.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.closing)
	e.stopBackground()
	if e.armed != nil {
		e.armed.Stop()
	}
	if e.pruner != nil {
		e.pruner.Stop()
	}
	e.mu.Unlock()
	if e.stopWatch != nil {
		e.stopWatch()
		<-e.watchDone
	}
	e.inflight.Wait()
	return nil
}

// enter registers an operation so Close waits for it.
func (e *Engine) enter() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.inflight.Add(1)
	return nil
}

// Providers lists the configured providers' names, sorted. Providers can
// change at run time (SetProviders): the list is a snapshot.
func (e *Engine) Providers() []string { return slices.Clone(e.providers.Load().names) }

// Provider returns the named provider's configuration.
func (e *Engine) Provider(name string) (Provider, error) {
	p, err := e.resolve(context.Background(), name)
	if err != nil {
		return Provider{}, err
	}
	return p.Provider, nil
}

func (e *Engine) provider(name string) (*provider, error) {
	set := e.providers.Load()
	p, ok := set.byName[name]
	if !ok {
		return nil, &UnknownProviderError{Name: name, Known: slices.Clone(set.names)}
	}
	return p, nil
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	// Live is the number of non-terminal flows.
	Live int
	// TimerWakeups counts how often the deadline timer fired. It grows only
	// at deadlines and at device flows' scheduled polls: an idle engine
	// does not wake up.
	TimerWakeups int64
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Live: len(e.live), TimerWakeups: e.wakeups.Load()}
}
