package engine

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"fmt"
	"io"
	"time"

	"github.com/flowdhq/flowd/states"
)

// launch is a launch link handed out by Start. It lives in memory only: it
// is good for seconds, and a link lost with a restart is answered like an
// expired one (the user still has the printed authorization URL).
type launch struct {
	token   string
	state   string
	authURL string
	due     time.Time
	used    bool
}

// newLaunch makes a launch link for a flow that is being started and
// returns its URL.
func (e *Engine) newLaunch(state, authURL string, now time.Time) (string, error) {
	var b [tokenBytes]byte
	if _, err := io.ReadFull(e.rand, b[:]); err != nil {
		return "", fmt.Errorf("make launch link: %w", err)
	}
	l := &launch{token: base64.RawURLEncoding.EncodeToString(b[:]), state: state, authURL: authURL, due: now.Add(e.cfg.LaunchTTL)}
	e.mu.Lock()
	e.sweepLaunches(now)
	e.launches[l.token] = l
	e.launchQueue = append(e.launchQueue, l)
	e.mu.Unlock()
	return e.launchPrefix + l.token, nil
}

// sweepLaunches drops the links that expired by now. Links expire in the
// order they were made, so only the front of the queue is looked at.
// Called with e.mu held.
func (e *Engine) sweepLaunches(now time.Time) {
	n := 0
	for n < len(e.launchQueue) && !now.Before(e.launchQueue[n].due) {
		delete(e.launches, e.launchQueue[n].token)
		e.launchQueue[n] = nil
		n++
	}
	if n > 0 {
		e.launchQueue = e.launchQueue[n:]
	}
	if len(e.launchQueue) == 0 {
		e.launchQueue = nil // let a grown backing array go
	}
}

// Launch opens a flow's launch link (the value of its LaunchParam): it
// binds the flow to the browser that opened it, recording browser_bound
// with a keyed fingerprint of a fresh binding secret, and returns that
// secret, to be set as the flow's binding cookie, and the authorization URL
// to send the browser on to. From then on a callback that is not
// Authenticated must carry the secret (CallbackParams.Binding).
//
// A link works once: ErrLaunchUsed the second time, ErrLaunchUnknown once it
// expired (or after a restart); neither changes the flow. A flow that is no
// longer awaiting its callback gives a *FlowError wrapping ErrNotAwaiting.
func (e *Engine) Launch(ctx context.Context, token string) (Launched, error) {
	if err := e.enter(); err != nil {
		return Launched{}, err
	}
	defer e.inflight.Done()
	now := e.clock.Now()
	e.mu.Lock()
	e.sweepLaunches(now)
	l := e.launches[token]
	if l == nil || !now.Before(l.due) {
		e.mu.Unlock()
		return Launched{}, fmt.Errorf("launch: %w", ErrLaunchUnknown)
	}
	if l.used {
		e.mu.Unlock()
		return Launched{}, fmt.Errorf("launch flow %s: %w", states.ShortID(l.state), ErrLaunchUsed)
	}
	// Spent before anything else happens: two requests racing for one
	// link cannot both bind the flow.
	l.used = true
	lf := e.live[l.state]
	e.mu.Unlock()
	if lf == nil {
		f, err := e.Status(ctx, l.state)
		if err != nil {
			return Launched{}, fmt.Errorf("launch: %w", err)
		}
		return Launched{}, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	var secret [tokenBytes]byte
	if _, err := io.ReadFull(e.rand, secret[:]); err != nil {
		return Launched{}, fmt.Errorf("launch flow %s: make binding: %w", states.ShortID(l.state), err)
	}
	binding := base64.RawURLEncoding.EncodeToString(secret[:])
	lf.mu.Lock()
	defer lf.mu.Unlock()
	f := lf.flow
	if f.State != states.AwaitingCallback || f.Exchanging || f.Bound() {
		return Launched{}, &FlowError{Flow: f, Err: ErrNotAwaiting}
	}
	if !e.clock.Now().Before(f.Deadline) {
		return Launched{}, &FlowError{Flow: f, Err: ErrExpired}
	}
	f, err := e.commit(ctx, lf, e.record(lf, states.BrowserBound, states.Data{BindingFingerprint: e.fingerprint(binding)}), nil)
	if err != nil {
		return Launched{}, fmt.Errorf("launch: %w", err)
	}
	return Launched{State: f.ID, AuthURL: l.authURL, Binding: binding, Deadline: f.Deadline}, nil
}

// checkBinding decides whether a callback may act on flow f: it may unless
// f is bound to a browser and the callback neither comes by an
// authenticated channel nor carries f's binding. It returns the kind of
// ignored callback to record, or "".
func (e *Engine) checkBinding(f states.Flow, p CallbackParams) (states.Ignored, error) {
	switch {
	case !f.Bound() || p.Authenticated:
		return "", nil
	case p.Binding == "":
		return states.IgnoredBindingMissing, ErrBindingMissing
	case !hmac.Equal([]byte(e.fingerprint(p.Binding)), []byte(f.BindingFingerprint)):
		return states.IgnoredBindingMismatch, ErrBindingMismatch
	}
	return "", nil
}
