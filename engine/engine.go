package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"flowd.local/flowd/states"
)

// Defaults of Config.
const (
	DefaultTTL                 = 5 * time.Minute
	DefaultExchangeTimeout     = 30 * time.Second
	DefaultRetention           = 7 * 24 * time.Hour
	DefaultLoopbackRedirectURL = "http://127.0.0.1:8085/oauth/callback"
	// CallbackPath is the path of every transport's redirect URI.
	CallbackPath = "/oauth/callback"
)

// pruneEvery is how often finished flows past retention are deleted.
const pruneEvery = time.Hour

// recoveryWorkers bounds concurrent appends at open and at a shared
// deadline: enough for the log to group them into few commits. A commit's
// cost is mostly its fsync and the index pages it writes, both shared by
// everything in it: on the bbolt log, expiring 20k flows ran at about 50k/s
// with 64 workers and 100k/s with 256 (commits of about 40 and 140
// expiries), and 1000 gained little more.
const recoveryWorkers = 256

// Secret keys in the Log.
const (
	verifierKeyPrefix = "verifier/"
	fingerprintKey    = "engine/fingerprint-key"
)

// Engine runs connect flows. It is safe for concurrent use.
//
// Every transition is appended durably to the Log before any caller learns
// of it. Live flows are held in memory, one small struct each; finished
// flows are read back from the Log on demand.
type Engine struct {
	log       Log
	tokens    TokenStore
	clock     Clock
	rand      io.Reader
	logger    *slog.Logger
	hooks     Hooks
	http      *http.Client
	providers map[string]*provider
	names     []string
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

	// shared is the Log as a Watcher when several engines share it; nil
	// otherwise. stopWatch and watchDone end and await its watch.
	shared    Watcher
	stopWatch context.CancelFunc
	watchDone chan struct{}

	closing  chan struct{}
	inflight sync.WaitGroup
	wakeups  atomic.Int64
	// refreshing holds one *sync.Mutex per TokenKey: refreshes of one
	// token are serialized, other tokens are not held up behind them.
	refreshing sync.Map
}

type provider struct {
	Provider
	oauth oauth2.Config
}

type ownerKey struct{ provider, principal string }

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
		closing:  make(chan struct{}),
	}
	e.shared, _ = cfg.Log.(Watcher)
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
	e.providers = map[string]*provider{}
	for _, p := range cfg.Providers {
		if err := validateProvider(p); err != nil {
			return nil, fmt.Errorf("engine: open: %w", err)
		}
		if _, dup := e.providers[p.Name]; dup {
			return nil, fmt.Errorf("engine: open: provider %q is configured twice", p.Name)
		}
		e.providers[p.Name] = &provider{Provider: p, oauth: oauth2.Config{
			ClientID:     p.ClientID,
			ClientSecret: p.ClientSecret,
			Endpoint:     oauth2.Endpoint{AuthURL: p.AuthURL, TokenURL: p.TokenURL, AuthStyle: p.AuthStyle},
			Scopes:       p.Scopes,
		}}
		e.names = append(e.names, p.Name)
	}
	sort.Strings(e.names)
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
		e.prune()
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
	if p.AuthStyle != oauth2.AuthStyleInParams && p.AuthStyle != oauth2.AuthStyleInHeader {
		return fmt.Errorf("provider %q: set AuthStyle to oauth2.AuthStyleInParams or oauth2.AuthStyleInHeader (auto-detect retries and can send a code twice)", p.Name)
	}
	if p.ClientID == "" {
		return fmt.Errorf("provider %q: no client id", p.Name)
	}
	return nil
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

// recover loads live flows, interrupting and expiring those that cannot go on.
func (e *Engine) recover(ctx context.Context) error {
	now := e.clock.Now()
	var interrupted, overdue []*liveFlow
	err := e.log.Live(ctx, func(history []states.Record) error {
		f, err := states.Fold(history)
		if err != nil {
			return fmt.Errorf("replay live flow: %w", err)
		}
		lf := &liveFlow{flow: f, done: make(chan struct{}), index: -1}
		noteRecords(lf, history)
		switch {
		case f.Exchanging && e.shared != nil:
			// Another engine may be exchanging the code right now: leave
			// the flow to it, and end it only if it never records the
			// outcome (see wakeFor).
			e.adopt(lf)
		case f.Exchanging:
			interrupted = append(interrupted, lf)
		case !now.Before(f.Deadline):
			overdue = append(overdue, lf)
		default:
			e.adopt(lf)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: open: recover: %w", err)
	}
	err = e.each(interrupted, func(lf *liveFlow) error {
		_, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason:  states.ExchangeInterrupted,
			Message: "flowd stopped while the code was being exchanged; the code is not redeemed again",
		}), e.dropVerifier(lf))
		return tolerateConflict(err)
	})
	if err != nil {
		return fmt.Errorf("engine: open: interrupt exchanges: %w", err)
	}
	err = e.each(overdue, func(lf *liveFlow) error {
		_, err := e.commit(ctx, lf, e.record(lf, states.DeadlinePassed, states.Data{Reason: states.ExpiredWhileDown}), e.dropVerifier(lf))
		return tolerateConflict(err)
	})
	if err != nil {
		return fmt.Errorf("engine: open: expire overdue flows: %w", err)
	}
	e.mu.Lock()
	e.rearm()
	e.mu.Unlock()
	if n := len(interrupted) + len(overdue); n > 0 || len(e.live) > 0 {
		e.logger.Info("recovered flows", "live", len(e.live), "interrupted", len(interrupted), "expired_while_down", len(overdue))
	}
	return nil
}

// each runs fn over flows with bounded concurrency, so their appends share commits.
func (e *Engine) each(flows []*liveFlow, fn func(*liveFlow) error) error {
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		sem   = make(chan struct{}, recoveryWorkers)
	)
	for _, lf := range flows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(lf); err != nil {
				errMu.Lock()
				first = cmpErr(first, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// adopt makes lf live and arms its deadline, and returns its birth number.
// Once adopted, lf.flow may change under lf.mu at any time.
func (e *Engine) adopt(lf *liveFlow) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.adoptLocked(lf)
}

// adoptLocked is adopt with e.mu held.
func (e *Engine) adoptLocked(lf *liveFlow) uint64 {
	delete(e.starting, lf.flow.ID)
	e.live[lf.flow.ID] = lf
	k := ownerKey{lf.flow.Provider, lf.flow.Principal}
	if e.owners[k] == nil {
		e.owners[k] = map[string]*liveFlow{}
	}
	e.owners[k][lf.flow.ID] = lf
	e.schedule(lf, e.wakeFor(lf))
	return lf.born
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

// Providers lists the configured providers' names, sorted.
func (e *Engine) Providers() []string { return slices.Clone(e.names) }

// Provider returns the named provider's configuration.
func (e *Engine) Provider(name string) (Provider, error) {
	p, err := e.provider(name)
	if err != nil {
		return Provider{}, err
	}
	return p.Provider, nil
}

func (e *Engine) provider(name string) (*provider, error) {
	p, ok := e.providers[name]
	if !ok {
		return nil, &UnknownProviderError{Name: name, Known: slices.Clone(e.names)}
	}
	return p, nil
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	// Live is the number of non-terminal flows.
	Live int
	// TimerWakeups counts how often the deadline timer fired. It grows only
	// at deadlines: an idle engine does not wake up.
	TimerWakeups int64
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Live: len(e.live), TimerWakeups: e.wakeups.Load()}
}

// Start begins a flow: it records the flow with its deadline, seals the
// PKCE verifier, and returns the authorization URL to send the user to.
// A live earlier flow of the same provider and principal is superseded.
func (e *Engine) Start(ctx context.Context, req StartRequest) (Started, error) {
	if err := e.enter(); err != nil {
		return Started{}, err
	}
	defer e.inflight.Done()
	p, err := e.provider(req.Provider)
	if err != nil {
		return Started{}, err
	}
	if req.Transport == "" {
		req.Transport = states.Loopback
	}
	var redirect string
	switch req.Transport {
	case states.Loopback:
		redirect = e.cfg.LoopbackRedirectURL
	case states.Manual:
		redirect = e.cfg.ManualRedirectURL
	case states.Gateway:
		if e.cfg.PublicBaseURL == "" {
			return Started{}, fmt.Errorf("start %s: %w: set public_base_url in the config, or use the loopback or manual transport", req.Provider, ErrNoGateway)
		}
		redirect = strings.TrimSuffix(e.cfg.PublicBaseURL, "/") + CallbackPath
	default:
		return Started{}, fmt.Errorf("start %s: %w %q: use loopback, gateway or manual", req.Provider, ErrBadTransport, req.Transport)
	}
	scopes := req.Scopes
	if len(scopes) == 0 {
		scopes = p.Scopes
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = e.cfg.TTL
	}
	state, verifier, err := e.tokens2()
	if err != nil {
		return Started{}, fmt.Errorf("start %s: make state token and PKCE verifier: %w", req.Provider, err)
	}
	now := e.clock.Now().UTC()
	due := now.Add(ttl)
	oc := p.oauth
	oc.RedirectURL = redirect
	oc.Scopes = scopes
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	for _, k := range sortedKeys(p.AuthParams) {
		opts = append(opts, oauth2.SetAuthURLParam(k, p.AuthParams[k]))
	}
	authURL := oc.AuthCodeURL(state, opts...)

	lf := &liveFlow{done: make(chan struct{}), index: -1, verifier: verifier}
	created := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 1, Event: states.Created, To: states.Pending, Time: now,
		Data: states.Data{
			Provider: p.Name, Principal: req.Principal, Scopes: slices.Clone(scopes),
			Transport: req.Transport, RedirectURI: redirect, Deadline: &due,
		},
	}
	issued := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 2, Event: states.URLIssued,
		From: states.Pending, To: states.AwaitingCallback, Time: now,
	}
	e.mu.Lock()
	e.starting[state] = true
	e.mu.Unlock()
	lf.mu.Lock()
	// commit notes the created record's Seq, assigned by the append, as lf.born.
	_, err = e.commit(ctx, lf, []states.Record{created, issued}, map[string][]byte{verifierKeyPrefix + state: []byte(verifier)})
	lf.mu.Unlock()
	if err != nil {
		e.mu.Lock()
		delete(e.starting, state)
		e.mu.Unlock()
		return Started{}, fmt.Errorf("start %s: %w", req.Provider, err)
	}
	born := e.adopt(lf)
	started := Started{State: state, AuthURL: authURL, RedirectURI: redirect, Deadline: due}
	// From here on another Start may supersede lf and rewrite lf.flow under
	// lf.mu: supersede works from the values this Start already knows.
	started.Superseded = e.supersede(ctx, ownerKey{p.Name, req.Principal}, state, born)
	// Every connect logs twice: check first, so an embedder that logs
	// nothing does not pay for building the attributes.
	if e.logger.Enabled(context.Background(), slog.LevelInfo) { // the context Info uses
		e.logger.Info("flow started", "flow", states.ShortID(state), "provider", p.Name, "transport", req.Transport, "deadline", due)
	}
	return started, nil
}

// supersede ends the live flows of owner adopted before the flow newID
// (born), naming newID. Flows mid-exchange are left to finish.
func (e *Engine) supersede(ctx context.Context, owner ownerKey, newID string, born uint64) []string {
	e.mu.Lock()
	var older []*liveFlow
	for id, o := range e.owners[owner] {
		if id != newID && o.born < born {
			older = append(older, o)
		}
	}
	e.mu.Unlock()
	var ended []string
	for _, o := range older {
		o.mu.Lock()
		if o.flow.State.Live() && !o.flow.Exchanging {
			if _, err := e.commit(ctx, o, e.record(o, states.Failed, states.Data{Reason: states.Superseded, SupersededBy: newID}), e.dropVerifier(o)); err != nil {
				e.logger.Warn("could not supersede flow", "flow", states.ShortID(o.flow.ID), "err", err)
			} else {
				ended = append(ended, o.flow.ID)
			}
		}
		o.mu.Unlock()
	}
	sort.Strings(ended)
	return ended
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tokenBytes is the size of a flow's state and of its PKCE verifier
// before encoding: 32 random bytes, 43 URL-safe characters.
const tokenBytes = 32

// tokens2 returns a new flow's state and PKCE verifier, each tokenBytes
// random bytes from the engine's source, URL-safe encoded, drawn in one
// read (one getrandom call for both on the system source).
func (e *Engine) tokens2() (state, verifier string, err error) {
	var b [2 * tokenBytes]byte
	if _, err := io.ReadFull(e.rand, b[:]); err != nil {
		return "", "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:tokenBytes]), base64.RawURLEncoding.EncodeToString(b[tokenBytes:]), nil
}

// record builds the next record of lf. The caller holds lf.mu.
func (e *Engine) record(lf *liveFlow, ev states.Event, d states.Data) []states.Record {
	to, err := states.Next(lf.flow.State, ev)
	if err != nil {
		to = "" // commit's Apply rejects it with the machine's own error
	}
	return []states.Record{{
		Version: states.SchemaVersion,
		Flow:    lf.flow.ID,
		FlowSeq: lf.flow.LastSeq + 1,
		Event:   ev,
		From:    lf.flow.State,
		To:      to,
		Time:    e.clock.Now().UTC(),
		Data:    d,
	}}
}

func (e *Engine) dropVerifier(lf *liveFlow) map[string][]byte {
	return map[string][]byte{verifierKeyPrefix + lf.flow.ID: nil}
}

// commit checks recs against the machine, appends them durably, and only
// then advances lf. The caller holds lf.mu. On error lf is unchanged.
func (e *Engine) commit(ctx context.Context, lf *liveFlow, recs []states.Record, secrets map[string][]byte) (states.Flow, error) {
	next := lf.flow
	for _, rec := range recs {
		var err error
		if next, err = next.Apply(rec); err != nil {
			return lf.flow, fmt.Errorf("flow %s: %w", states.ShortID(lf.flow.ID), err)
		}
	}
	begin := time.Now()
	err := e.log.Append(ctx, recs, secrets)
	if e.hooks.Append != nil {
		e.hooks.Append(time.Since(begin), err)
	}
	if err != nil {
		if conflict(err) && lf.flow.ID != "" {
			// Another engine on a shared log advanced the flow: re-read
			// it, so the caller can decide again on what it became.
			e.refresh(ctx, lf)
		}
		return lf.flow, fmt.Errorf("append %s to flow %s: %w", recs[len(recs)-1].Event, states.ShortID(recs[0].Flow), err)
	}
	lf.flow = next
	noteRecords(lf, recs)
	if next.State.Terminal() && lf.done != nil {
		e.retire(lf)
	}
	if e.hooks.Transition != nil {
		for _, rec := range recs {
			e.hooks.Transition(rec, next)
		}
	}
	return next, nil
}

// retire removes a flow that became terminal and wakes its waiters. The
// caller holds lf.mu.
func (e *Engine) retire(lf *liveFlow) {
	lf.verifier = ""
	e.mu.Lock()
	if e.live[lf.flow.ID] == lf {
		delete(e.live, lf.flow.ID)
		k := ownerKey{lf.flow.Provider, lf.flow.Principal}
		delete(e.owners[k], lf.flow.ID)
		if len(e.owners[k]) == 0 {
			delete(e.owners, k)
		}
		e.unschedule(lf)
	}
	e.mu.Unlock()
	select {
	case <-lf.done:
	default:
		close(lf.done)
	}
}

func (e *Engine) lookup(state string) *liveFlow {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.live[state]
}

// Callback delivers the provider's redirect for a flow. A provider error
// ends the flow error(provider_denied); a code is exchanged once, with the
// flow's PKCE verifier, and the flow ends complete or error(exchange_failed).
//
// It returns the flow as the callback left it. A callback that cannot be
// applied returns an error: ErrUnknownState (nothing recorded), or a
// *FlowError wrapping ErrNotAwaiting (finished or mid-exchange: recorded in
// the flow's history as callback_ignored) or ErrExpired.
func (e *Engine) Callback(ctx context.Context, p CallbackParams) (states.Flow, error) {
	if err := e.enter(); err != nil {
		return states.Flow{}, err
	}
	defer e.inflight.Done()
	fp := ""
	if p.Code != "" {
		fp = e.fingerprint(p.Code)
	}
	lf, err := e.hold(ctx, p.State)
	if err != nil {
		return states.Flow{}, fmt.Errorf("callback: read the flow: %w", err)
	}
	if lf == nil {
		return e.ignoreFinished(ctx, p.State, fp)
	}
	for attempt := 0; ; attempt++ {
		f, err, again := e.callback(ctx, lf, p, fp)
		if !again || attempt == conflictRetries {
			return f, err
		}
		// Another engine on a shared log advanced the flow first; lf now
		// holds what it became: decide again.
	}
}

// callback is Callback on a flow this engine holds. again reports a lost
// race before anything was done that cannot be repeated: the flow was
// re-read and the callback may be decided again.
func (e *Engine) callback(ctx context.Context, lf *liveFlow, p CallbackParams, fp string) (_ states.Flow, _ error, again bool) {
	lf.mu.Lock()
	locked := true
	defer func() {
		if locked {
			lf.mu.Unlock()
		}
	}()
	f := lf.flow
	switch {
	case f.State.Terminal():
		lf.mu.Unlock()
		locked = false
		f, err := e.ignoreFinished(ctx, p.State, fp)
		return f, err, false
	case f.Exchanging:
		f, err := e.commit(ctx, lf, e.record(lf, states.CallbackIgnored, states.Data{Ignored: states.IgnoredInProgress, CodeFingerprint: fp}), nil)
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}, false
	case f.State != states.AwaitingCallback:
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}, false
	case !e.clock.Now().Before(f.Deadline):
		f, err := e.commit(ctx, lf, e.record(lf, states.DeadlinePassed, states.Data{Reason: states.DeadlineExpired}), e.dropVerifier(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, &FlowError{Flow: f, Err: ErrExpired}, false
	case p.Error != "":
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.ProviderDenied, ErrorCode: clip(redact(p.Error, []string{p.Code}), 200), Message: clip(redact(p.ErrorDescription, []string{p.Code}), 500),
		}), e.dropVerifier(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, nil, false
	case p.Code == "":
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{
			Reason: states.InvalidCallback, Message: "the callback carried neither a code nor an error",
		}), e.dropVerifier(lf))
		if err != nil {
			return f, fmt.Errorf("callback: %w", err), conflict(err)
		}
		return f, nil, false
	}
	verifier, ok := lf.verifier, lf.verifier != ""
	if !ok {
		plain, found, err := e.log.Secret(ctx, verifierKeyPrefix+f.ID)
		if err != nil {
			return f, fmt.Errorf("callback: read the flow's PKCE verifier: %w", err), false
		}
		verifier, ok = string(plain), found
	}
	var err error
	// Only the engine whose exchange_started lands redeems the code.
	if _, err := e.commit(ctx, lf, e.record(lf, states.ExchangeStarted, states.Data{CodeFingerprint: fp}), nil); err != nil {
		return lf.flow, fmt.Errorf("callback: %w", err), conflict(err)
	}
	lf.verifier = "" // the code is spent: nothing redeems it again
	// The exchange runs without the flow's lock, so a repeated callback is
	// recorded at once as ignored instead of queueing behind the exchange.
	lf.exchanging = true
	lf.mu.Unlock()
	locked = false
	// The outcome is recorded even if the caller goes away: the code is spent.
	bg := context.WithoutCancel(ctx)
	outcome := e.exchange(bg, f, p.Code, verifier, ok)
	lf.mu.Lock()
	locked = true
	lf.exchanging = false
	for attempt := 0; ; attempt++ {
		secrets := e.dropVerifier(lf)
		maps.Copy(secrets, outcome.secrets)
		f, err = e.commit(bg, lf, e.record(lf, outcome.event, outcome.data), secrets)
		// Another engine on a shared log may have recorded a callback
		// ignored meanwhile: record the outcome after it. The code is
		// spent, so the callback is never decided again.
		if err == nil || !conflict(err) || !lf.flow.Exchanging || attempt == outcomeRetries {
			break
		}
	}
	if err != nil {
		return f, fmt.Errorf("callback: %w", err), false
	}
	return f, nil, false
}

type outcome struct {
	event states.Event
	data  states.Data
	// secrets are written with the outcome's record (the token).
	secrets map[string][]byte
}

// exchange redeems the code at the token endpoint and stores the token, or,
// when tokens are kept in the log, returns it in the outcome's secrets.
func (e *Engine) exchange(ctx context.Context, f states.Flow, code, verifier string, haveVerifier bool) outcome {
	failed := func(d states.Data) outcome {
		d.Reason = states.ExchangeFailed
		e.logger.Warn("exchange failed", "flow", states.ShortID(f.ID), "provider", f.Provider, "http_status", d.HTTPStatus, "error_code", d.ErrorCode)
		return outcome{event: states.Failed, data: d}
	}
	if !haveVerifier {
		return failed(states.Data{ErrorCode: "verifier_missing", Message: "the flow's PKCE verifier is missing from the sealed store; start a new connect"})
	}
	p, err := e.provider(f.Provider)
	if err != nil {
		return failed(states.Data{ErrorCode: "unknown_provider", Message: fmt.Sprintf("provider %q is no longer configured", f.Provider)})
	}
	oc := p.oauth
	oc.RedirectURL = f.RedirectURI
	oc.Scopes = f.Scopes
	xctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, e.http), e.cfg.ExchangeTimeout)
	defer cancel()
	tok, err := oc.Exchange(xctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return failed(describeExchangeError(err, xctx.Err(), e.cfg.ExchangeTimeout, code, verifier, p.ClientSecret))
	}
	granted := grantedScopes(tok, f.Scopes)
	now := e.clock.Now().UTC()
	st := StoredToken{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType, RefreshToken: tok.RefreshToken,
		Expiry: e.expiry(tok), Scopes: granted, Flow: f.ID, Obtained: now,
	}
	key := TokenKey{Provider: f.Provider, Account: f.Principal}
	var secrets map[string][]byte
	if lt, ok := e.tokens.(*logTokens); ok {
		// Tokens kept in the log's secrets go in the append that records
		// the outcome: one commit instead of two, and the token lands
		// exactly when the record saying it was stored does.
		b, err := lt.encode(key, st)
		if err != nil {
			return failed(states.Data{ErrorCode: "token_not_stored", Message: "the token could not be stored: " + err.Error()})
		}
		secrets = map[string][]byte{lt.key(key): b}
	} else if err := e.tokens.SaveToken(ctx, key, st); err != nil {
		return failed(states.Data{ErrorCode: "token_not_stored", Message: "the token could not be stored: " + err.Error()})
	}
	if e.logger.Enabled(context.Background(), slog.LevelInfo) { // the context Info uses
		e.logger.Info("flow complete", "flow", states.ShortID(f.ID), "provider", f.Provider, "scopes", strings.Join(granted, " "))
	}
	return outcome{event: states.ExchangeSucceeded, data: states.Data{Reason: states.Exchanged, GrantedScopes: granted, TokenStored: true}, secrets: secrets}
}

// describeExchangeError turns an exchange error into record data. It keeps
// the HTTP status and the provider's error code and description, never the
// response body, which could carry a token. The provider's text is its
// own: one that echoes the request would put the code, verifier or client
// secret in the log, so the secrets sent are redacted from it (before it
// is clipped, so no half of a secret survives either).
func describeExchangeError(err, ctxErr error, timeout time.Duration, sent ...string) states.Data {
	text := func(s string, n int) string { return clip(redact(s, sent), n) }
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		d := states.Data{ErrorCode: text(re.ErrorCode, 200), Message: text(re.ErrorDescription, 500)}
		if re.Response != nil {
			d.HTTPStatus = re.Response.StatusCode
		}
		if d.ErrorCode == "" {
			d.ErrorCode = "http_error"
		}
		if d.Message == "" && re.Response != nil {
			d.Message = fmt.Sprintf("the token endpoint answered %s", re.Response.Status)
			if ct := re.Response.Header.Get("Content-Type"); ct != "" {
				d.Message += " (" + text(ct, 100) + ")"
			}
		}
		return d
	case errors.Is(ctxErr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return states.Data{ErrorCode: "timeout", Message: fmt.Sprintf("the token endpoint did not answer within %s", timeout)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return states.Data{ErrorCode: "timeout", Message: fmt.Sprintf("the token endpoint did not answer within %s", timeout)}
		}
		return states.Data{ErrorCode: "network_error", Message: text(ue.Err.Error(), 300)}
	}
	// oauth2's own errors: a 200 that is not a token (HTML, garbage, no access_token).
	return states.Data{ErrorCode: "invalid_response", Message: text(strings.TrimPrefix(err.Error(), "oauth2: "), 300)}
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// grantedScopes reads the token's scope field (space separated in JSON,
// comma separated in some form responses); without one, the requested
// scopes were granted.
func grantedScopes(tok *oauth2.Token, requested []string) []string {
	var raw string
	switch v := tok.Extra("scope").(type) {
	case string:
		raw = v
	case []any:
		parts := make([]string, 0, len(v))
		for _, s := range v {
			if s, ok := s.(string); ok {
				parts = append(parts, s)
			}
		}
		raw = strings.Join(parts, " ")
	}
	fields := strings.FieldsFunc(raw, func(r rune) bool { return r == ' ' || r == ',' })
	if len(fields) == 0 {
		return slices.Clone(requested)
	}
	return fields
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ignoreFinished records a callback for a flow that is no longer live. The
// flow's history is read back from the log; a conflicting writer is
// retried, since the append is a compare-and-set on the flow's sequence.
func (e *Engine) ignoreFinished(ctx context.Context, state, fp string) (states.Flow, error) {
	for attempt := 0; ; attempt++ {
		history, err := e.log.History(ctx, state)
		if err != nil {
			return states.Flow{}, fmt.Errorf("callback: read history: %w", err)
		}
		if len(history) == 0 {
			if e.hooks.UnknownCallback != nil {
				e.hooks.UnknownCallback()
			}
			return states.Flow{}, fmt.Errorf("callback for state %s: %w", states.ShortID(state), ErrUnknownState)
		}
		f, err := states.Fold(history)
		if err != nil {
			return states.Flow{}, fmt.Errorf("callback: %w", err)
		}
		if !f.State.Terminal() {
			// Live in the log but not in this engine: another writer owns it.
			return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
		}
		tmp := &liveFlow{flow: f, index: -1}
		f, err = e.commit(ctx, tmp, e.record(tmp, states.CallbackIgnored, states.Data{Ignored: states.IgnoredFinished, CodeFingerprint: fp}), nil)
		if errors.Is(err, states.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return f, fmt.Errorf("callback: %w", err)
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
}

// fingerprint is a keyed hash of a secret, for correlating it in the log
// without revealing it.
func (e *Engine) fingerprint(secret string) string {
	m, _ := e.fpMACs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, e.fpKey)
	}
	m.Reset()
	_, _ = io.WriteString(m, secret)
	var sum [sha256.Size]byte
	var out [len("hmac:") + 24]byte
	copy(out[:], "hmac:")
	hex.Encode(out[len("hmac:"):], m.Sum(sum[:0])[:12])
	e.fpMACs.Put(m)
	return string(out[:])
}

// Cancel ends a live flow error(canceled). A flow mid-exchange cannot be
// canceled (*FlowError wrapping ErrExchangeInProgress); a finished one
// gives a *FlowError wrapping ErrNotAwaiting.
func (e *Engine) Cancel(ctx context.Context, state string) (states.Flow, error) {
	if err := e.enter(); err != nil {
		return states.Flow{}, err
	}
	defer e.inflight.Done()
	lf, err := e.hold(ctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("cancel: read the flow: %w", err)
	}
	if lf == nil {
		f, err := e.finished(ctx, state)
		if err != nil {
			return f, err
		}
		return f, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	lf.mu.Lock()
	defer lf.mu.Unlock()
	for attempt := 0; ; attempt++ {
		switch {
		case lf.flow.State.Terminal():
			return lf.flow, &FlowError{Flow: lf.flow, Err: ErrNotAwaiting}
		case lf.flow.Exchanging:
			return lf.flow, &FlowError{Flow: lf.flow, Err: ErrExchangeInProgress}
		}
		f, err := e.commit(ctx, lf, e.record(lf, states.Failed, states.Data{Reason: states.Canceled}), e.dropVerifier(lf))
		if conflict(err) && attempt < conflictRetries {
			continue // another engine advanced the flow: decide on what it became
		}
		if err != nil {
			return f, fmt.Errorf("cancel: %w", err)
		}
		return f, nil
	}
}

// finished reads a flow that is not live from the log.
func (e *Engine) finished(ctx context.Context, state string) (states.Flow, error) {
	history, err := e.log.History(ctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("read history of %s: %w", states.ShortID(state), err)
	}
	if len(history) == 0 {
		return states.Flow{}, fmt.Errorf("flow %s: %w", states.ShortID(state), ErrUnknownState)
	}
	return states.Fold(history)
}

// Status returns a flow as it stands.
func (e *Engine) Status(ctx context.Context, state string) (states.Flow, error) {
	if lf := e.lookup(state); lf != nil {
		lf.mu.Lock()
		f := lf.flow
		lf.mu.Unlock()
		return f, nil
	}
	return e.finished(ctx, state)
}

// Wait returns the flow as soon as it is terminal, woken by the commit
// that ended it. If ctx ends first it returns the flow as it stands and
// ctx's error.
func (e *Engine) Wait(ctx context.Context, state string) (states.Flow, error) {
	lf, err := e.hold(ctx, state)
	if err != nil {
		return states.Flow{}, fmt.Errorf("wait for %s: %w", states.ShortID(state), err)
	}
	if lf != nil {
		select {
		case <-lf.done:
		case <-ctx.Done():
			f, _ := e.Status(context.WithoutCancel(ctx), state)
			return f, ctx.Err()
		case <-e.closing:
			f, _ := e.Status(context.WithoutCancel(ctx), state)
			return f, ErrClosed
		}
		lf.mu.Lock()
		f := lf.flow
		lf.mu.Unlock()
		return f, nil
	}
	return e.finished(ctx, state)
}

// History returns a flow's records in order.
func (e *Engine) History(ctx context.Context, state string) ([]states.Record, error) {
	h, err := e.log.History(ctx, state)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", states.ShortID(state), err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("history of %s: %w", states.ShortID(state), ErrUnknownState)
	}
	return h, nil
}

// List returns the flows matching f, newest first. Live flows come from
// memory; asking for finished flows reads the whole log.
func (e *Engine) List(ctx context.Context, f Filter) ([]states.Flow, error) {
	match := func(fl states.Flow) bool {
		return (len(f.States) == 0 || slices.Contains(f.States, fl.State)) && (f.Provider == "" || f.Provider == fl.Provider)
	}
	liveOnly := len(f.States) > 0
	for _, s := range f.States {
		liveOnly = liveOnly && s.Live()
	}
	var out []states.Flow
	if liveOnly {
		e.mu.Lock()
		lfs := make([]*liveFlow, 0, len(e.live))
		for _, lf := range e.live {
			lfs = append(lfs, lf)
		}
		e.mu.Unlock()
		for _, lf := range lfs {
			lf.mu.Lock()
			fl := lf.flow
			lf.mu.Unlock()
			if match(fl) {
				out = append(out, fl)
			}
		}
	} else {
		flows := map[string]states.Flow{}
		err := e.log.Scan(ctx, 0, func(rec states.Record) error {
			fl, err := flows[rec.Flow].Apply(rec)
			if err != nil {
				return err
			}
			flows[rec.Flow] = fl
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list flows: %w", err)
		}
		for _, fl := range flows {
			if match(fl) {
				out = append(out, fl)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
