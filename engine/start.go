package engine

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"golang.org/x/oauth2"

	"github.com/flowdhq/flowd/states"
)

// Start begins a flow: it records the flow with its deadline, seals the
// PKCE verifier, and returns the authorization URL to send the user to.
// A live earlier flow of the same provider and account is superseded.
//
// Scopes asked for on top of a connection the account already holds are a
// step-up: the flow asks for the union of the granted and the new scopes,
// and the stored token is replaced only when the flow completes, so a
// step-up that fails keeps the connection as it was.
func (e *Engine) Start(ctx context.Context, req StartRequest) (Started, error) {
	if err := e.enter(); err != nil {
		return Started{}, err
	}
	defer e.inflight.Done()
	if req.Provider == "" && req.Resource != "" {
		req.Provider = req.Resource // what errors name until discovery finds the canonical URL
	}
	if req.Transport == "" {
		req.Transport = states.Loopback
	}
	client, err := checkClient(req.Provider, req.Client, req.Resource)
	if err != nil {
		return Started{}, err
	}
	if req.Transport == states.Device {
		if req.Resource != "" {
			return Started{}, fmt.Errorf("start %s: %w %q for an MCP server: use loopback or manual", req.Provider, ErrBadTransport, req.Transport)
		}
		p, err := e.provider(req.Provider)
		if err != nil {
			return Started{}, err
		}
		scopes := req.Scopes
		if len(scopes) == 0 {
			scopes = p.Scopes
		}
		return e.startDevice(ctx, p.withClient(client.forProvider(p)), req, scopes)
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
		return Started{}, fmt.Errorf("start %s: %w %q: use loopback, gateway, manual or device", req.Provider, ErrBadTransport, req.Transport)
	}
	var (
		p      *provider
		scopes = req.Scopes
		extra  states.Data
	)
	if req.Resource != "" {
		if p, scopes, extra, err = e.startMCP(ctx, req, redirect); err != nil {
			return Started{}, err
		}
	} else if p, err = e.provider(req.Provider); err != nil {
		return Started{}, err
	}
	client = client.forProvider(p)
	p = p.withClient(client)
	switch {
	case req.Resource != "":
		// An MCP server's scopes (and its step-up) are startMCP's.
	case len(scopes) == 0:
		scopes = p.Scopes
	default:
		// Only explicit scopes can step up: a connect with the defaults
		// reads no stored token, which keeps Start off the token store.
		scopes = e.stepUp(ctx, TokenKey{Provider: p.Name, Account: req.Account}, scopes)
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = e.cfg.TTL
	}
	oidc := slices.Contains(scopes, "openid")
	state, verifier, nonce, err := e.newFlowSecrets(oidc)
	if err != nil {
		return Started{}, fmt.Errorf("start %s: make state token and PKCE verifier: %w", req.Provider, err)
	}
	now := e.clock.Now().UTC()
	due := now.Add(ttl)
	oc := p.oauth
	oc.RedirectURL = redirect
	oc.Scopes = scopes
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	sealed := map[string][]byte{verifierKeyPrefix + state: []byte(verifier)}
	nonceFP := ""
	if oidc {
		// OpenID Connect Core 1.0 section 3.1.2.1: the nonce binds the ID
		// token to this authorization request, so one replayed from
		// another sign-in is refused.
		opts = append(opts, oauth2.SetAuthURLParam("nonce", nonce))
		sealed[nonceKeyPrefix+state] = []byte(nonce)
		nonceFP = e.fingerprint(nonce)
	}
	for _, k := range sortedKeys(p.AuthParams) {
		opts = append(opts, oauth2.SetAuthURLParam(k, p.AuthParams[k]))
	}
	if p.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", p.Resource))
	}
	authURL := oc.AuthCodeURL(state, opts...)

	if client != nil {
		// Sealed with the verifier: the callback after a restart reads it
		// back, and it is dropped with the flow's other secrets.
		sealed[flowClientPrefix+state] = encodeClient(client)
	}
	lf := &liveFlow{done: make(chan struct{}), index: -1, verifier: verifier, nonce: nonce, client: client}
	created := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 1, Event: states.Created, To: states.Pending, Time: now,
		Data: states.Data{
			Provider: p.Name, Account: req.Account, Scopes: slices.Clone(scopes),
			Transport: req.Transport, RedirectURI: redirect, Deadline: &due,
			Issuer: p.Issuer, IssuerRequired: p.RequireIssuer, NonceFingerprint: nonceFP,
			// Nil but for a connect by MCP server URL.
			MCPDiscovery: extra.MCPDiscovery,
		},
	}
	createdClientData(&created.Data, client)
	issued := states.Record{
		Version: states.SchemaVersion, Flow: state, FlowSeq: 2, Event: states.URLIssued,
		From: states.Pending, To: states.AwaitingCallback, Time: now,
	}
	e.mu.Lock()
	e.starting[state] = true
	e.mu.Unlock()
	lf.mu.Lock()
	// commit notes the created record's Seq, assigned by the append, as lf.born.
	_, err = e.commit(ctx, lf, []states.Record{created, issued}, sealed)
	lf.mu.Unlock()
	if err != nil {
		e.mu.Lock()
		delete(e.starting, state)
		e.mu.Unlock()
		return Started{}, fmt.Errorf("start %s: %w", req.Provider, err)
	}
	born := e.adopt(lf)
	started := Started{ID: state, AuthURL: authURL, RedirectURI: redirect, Deadline: due, Scopes: slices.Clone(scopes)}
	if req.Launch {
		// After the commit: a link never names a flow the log lacks.
		if started.LaunchURL, err = e.newLaunch(state, authURL, now); err != nil {
			// The flow stands; the caller still has AuthURL, unbound.
			e.logger.Warn("no launch link for flow", "flow", states.ShortID(state), "err", err)
		}
	}
	// From here on another Start may supersede lf and rewrite lf.flow under
	// lf.mu: supersede works from the values this Start already knows.
	started.Superseded = e.supersede(ctx, ownerKey{p.Name, req.Account}, state, born)
	// Every connect logs twice: check first, so an embedder that logs
	// nothing does not pay for building the attributes.
	if e.logger.Enabled(context.Background(), slog.LevelInfo) { // the context Info uses
		e.logger.Info("flow started", "flow", states.ShortID(state), "provider", p.Name, "transport", req.Transport, "deadline", due)
	}
	return started, nil
}

// supersede ends the live flows of owner adopted before the flow newID
// (born), naming newID. Flows mid-exchange are left to finish.
//
// Log order decides, not adoption order: two Starts may commit in one
// order and adopt in the other, so the later-born one scanned before the
// earlier one was adopted and missed it. The earlier one then finds the
// newer flow here and ends itself, so exactly one flow of an owner stays live.
func (e *Engine) supersede(ctx context.Context, owner ownerKey, newID string, born uint64) []string {
	e.mu.Lock()
	var older []*liveFlow
	var olderIDs []string
	var self, newest *liveFlow
	var newestID string // the map's key: newest.flow is guarded by newest.mu, not e.mu
	for id, o := range e.owners[owner] {
		switch {
		case id == newID:
			self = o
		case o.born < born:
			older, olderIDs = append(older, o), append(olderIDs, id)
		case newest == nil || o.born > newest.born:
			newest, newestID = o, id
		}
	}
	e.mu.Unlock()
	if self != nil && newest != nil {
		e.endSuperseded(ctx, self, newestID)
	}
	var ended []string
	for i, o := range older {
		if e.endSuperseded(ctx, o, newID) {
			ended = append(ended, olderIDs[i])
		}
	}
	sort.Strings(ended)
	return ended
}

// endSuperseded ends o as superseded by byID unless it has finished or is
// mid-exchange, and reports whether it did.
func (e *Engine) endSuperseded(ctx context.Context, o *liveFlow, byID string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.flow.State.Live() || o.flow.Exchanging {
		return false
	}
	if _, err := e.commit(ctx, o, e.record(o, states.Failed, states.Data{Reason: states.Superseded, SupersededBy: byID}), e.dropFlowSecrets(o)); err != nil {
		e.logger.Warn("could not supersede flow", "flow", states.ShortID(o.flow.ID), "err", err)
		return false
	}
	return true
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

// maxStateRedraws bounds the redraws of a state's first byte, so a broken
// random source is an error rather than a hang. A working one needs a
// redraw once in 64 flows, two in a row once in 4096.
const maxStateRedraws = 64

// ErrRandomSource: the random source keeps producing bytes no state can
// begin with; it is not random.
var ErrRandomSource = errors.New("random source is not random")

// newFlowSecrets returns a new flow's state, PKCE verifier and, when
// withNonce, its OpenID Connect nonce, each tokenBytes random bytes from
// the engine's source, URL-safe encoded, drawn in one read (one getrandom
// call for all on the system source). Flows without a nonce draw exactly
// what they drew before nonces existed, so recorded runs stay the same.
//
// A state never begins with '-': command lines take such an argument for
// flags (flowctl status -3fa9...). base64url encodes the first byte's top
// six bits as the first character, '-' being 62 (0xF8-0xFB); that byte is
// drawn again until it encodes otherwise. The state stays 43 characters of
// the URL-safe alphabet, uniform over those not beginning with '-': 255.98
// bits of entropy instead of 256.
func (e *Engine) newFlowSecrets(withNonce bool) (state, verifier, nonce string, err error) {
	var buf [3 * tokenBytes]byte
	b := buf[:2*tokenBytes]
	if withNonce {
		b = buf[:]
	}
	if _, err := io.ReadFull(e.rand, b); err != nil {
		return "", "", "", err
	}
	for i := 0; b[0]>>2 == 62; i++ {
		if i == maxStateRedraws {
			return "", "", "", fmt.Errorf("%w: %d draws in a row would begin the state with '-'", ErrRandomSource, maxStateRedraws+1)
		}
		if _, err := io.ReadFull(e.rand, b[:1]); err != nil {
			return "", "", "", err
		}
	}
	enc := base64.RawURLEncoding.EncodeToString
	state, verifier = enc(b[:tokenBytes]), enc(b[tokenBytes:2*tokenBytes])
	if withNonce {
		nonce = enc(b[2*tokenBytes:])
	}
	return state, verifier, nonce, nil
}

// stepUp returns the scopes a connect for key asks for: requested, then
// those key's stored token was granted that requested lacks. A key
// without an account steps up the provider's only account; with several,
// which one the user signs in as is not known yet, and none is.
func (e *Engine) stepUp(ctx context.Context, key TokenKey, requested []string) []string {
	key, err := e.resolveAccount(ctx, key)
	if errors.Is(err, ErrAccountRequired) {
		return requested
	}
	var st StoredToken
	if err == nil {
		st, err = e.tokens.LoadToken(ctx, key)
	}
	if err != nil {
		if !errors.Is(err, ErrNoToken) {
			e.logger.Warn("could not read the stored token to step up its scopes; asking for the requested ones", "provider", key.Provider, "err", err)
		}
		return requested
	}
	out := slices.Clone(requested)
	for _, s := range st.Scopes {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
