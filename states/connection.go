package states

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Health is how a connection stands, as `flowctl status` shows it.
type Health string

// The health of a connection.
const (
	// Healthy: the last refresh (if any) succeeded, and the token is valid
	// or can be refreshed.
	Healthy Health = "healthy"
	// RefreshFailing: the last refresh failed and reconnecting is not known
	// to be needed: the provider was unreachable, or refused for a reason
	// other than a dead grant (a misconfigured client, say).
	RefreshFailing Health = "refresh_failing"
	// NeedsReconnect: the provider rejected the refresh token
	// (invalid_grant: revoked, expired or reused), or the access token
	// expired and there is no refresh token. Only a new connect helps.
	NeedsReconnect Health = "needs_reconnect"
)

// Connection is what a complete flow produced: the token it stored and
// what happened to it since, folded from the flow's records. It holds no
// secret; the token itself is in the token store.
type Connection struct {
	// Flow is the id of the flow whose exchange stored the token.
	Flow     string
	Provider string
	// Account is the account the token is stored under: the one that
	// signed in, as the exchange_succeeded record names it.
	Account string
	// ClientID and Registration are the flow's (Flow.ClientID): the client
	// the token is refreshed and revoked with, when not the provider's
	// configured one.
	ClientID, Registration string
	// Connected is when the exchange stored the token.
	Connected time.Time
	// Scopes are the scopes granted, updated by a refresh that names them.
	Scopes []string
	// TokenExpiry is when the access token expires; zero when the provider
	// gave no expiry.
	TokenExpiry time.Time
	// RefreshFP is the keyed fingerprint of the refresh token held, "" when
	// none is: HasRefreshToken reports it.
	RefreshFP string
	// Refreshing: a refresh_started has no outcome yet (under way, or lost
	// with the engine that ran it).
	Refreshing      bool
	RefreshingSince time.Time
	// LastRefresh is when a refresh last succeeded; Refreshes and Rotations
	// count the successes and the refresh tokens rotated.
	LastRefresh time.Time
	Refreshes   int
	Rotations   int
	// LastFailure is the latest refresh failure since the last success (nil
	// when the last outcome was a success); FailingSince is the first
	// failure of that run.
	LastFailure  *RefreshFailure
	FailingSince time.Time
	// Disconnected is when the stored token was deleted; zero while
	// connected. Revocation says what the provider was told.
	Disconnected time.Time
	Revocation   Revocation

	// seq is the log position of the record that stored the token: of two
	// connects stored in the same instant, the later one holds the token.
	seq uint64
}

// RefreshFailure is a refresh_failed record's detail.
type RefreshFailure struct {
	Time       time.Time
	ErrorCode  string
	Message    string
	HTTPStatus int
	Transient  bool
}

// HasRefreshToken reports whether the connection holds a refresh token.
func (c Connection) HasRefreshToken() bool { return c.RefreshFP != "" }

// Active reports whether the connection still holds its token.
func (c Connection) Active() bool { return c.Disconnected.IsZero() }

// HealthAt is the connection's health at now: needs_reconnect after the
// provider rejected the refresh token with invalid_grant or once the
// access token has expired with no refresh token to renew it;
// refresh_failing after any other failed refresh; healthy otherwise.
func (c Connection) HealthAt(now time.Time) Health {
	switch {
	case c.LastFailure != nil && !c.LastFailure.Transient && c.LastFailure.ErrorCode == "invalid_grant":
		return NeedsReconnect
	case c.LastFailure != nil:
		return RefreshFailing
	case !c.HasRefreshToken() && !c.TokenExpiry.IsZero() && !now.Before(c.TokenExpiry):
		return NeedsReconnect
	}
	return Healthy
}

func newConnection(f *Flow, rec *Record) *Connection {
	t := rec.Data.Tokens()
	c := &Connection{
		Flow: f.ID, Provider: f.Provider, Account: f.Account, Connected: rec.Time,
		ClientID: f.ClientID, Registration: f.Registration, seq: rec.Seq,
		Scopes: slices.Clone(rec.Data.GrantedScopes), RefreshFP: t.RefreshFP,
	}
	if t.TokenExpiry != nil {
		c.TokenExpiry = t.TokenExpiry.UTC()
	}
	return c
}

// apply advances c by a token event that checkTokenEvent accepted.
func (c *Connection) apply(rec *Record) {
	d, t := &rec.Data, rec.Data.Tokens()
	switch rec.Event {
	case RefreshStarted:
		c.Refreshing, c.RefreshingSince = true, rec.Time
	case TokenRefreshed:
		c.Refreshing, c.RefreshingSince = false, time.Time{}
		c.LastRefresh = rec.Time
		c.Refreshes++
		c.TokenExpiry = time.Time{}
		if t.TokenExpiry != nil {
			c.TokenExpiry = t.TokenExpiry.UTC()
		}
		if t.Rotated {
			c.Rotations++
			c.RefreshFP = t.RefreshFP
		}
		if len(d.GrantedScopes) > 0 {
			c.Scopes = slices.Clone(d.GrantedScopes)
		}
		c.LastFailure, c.FailingSince = nil, time.Time{}
	case RefreshFailed:
		c.Refreshing, c.RefreshingSince = false, time.Time{}
		if c.LastFailure == nil {
			c.FailingSince = rec.Time
		}
		c.LastFailure = &RefreshFailure{Time: rec.Time, ErrorCode: d.ErrorCode, Message: d.Message, HTTPStatus: d.HTTPStatus, Transient: t.Transient}
	case Revoked:
		c.Revocation = RevocationDone
	case Disconnected:
		c.Refreshing, c.RefreshingSince = false, time.Time{}
		c.Disconnected = rec.Time
		c.Revocation = t.Revocation
	}
}

// checkTokenEvent holds a token event to the connection it is about: there
// must be one (the flow stored a token and was not disconnected), and a
// refresh's outcome needs its refresh_started. A refresh_started while
// another has no outcome is legal: the engine that ran the first may have
// stopped, and its claim is taken over.
func (f *Flow) checkTokenEvent(rec *Record) error {
	d := rec.Data.Tokens()
	switch {
	case f.Conn == nil:
		return fmt.Errorf("%w: %s on a flow that stored no token", ErrIllegalTransition, rec.Event)
	case !f.Conn.Active():
		return fmt.Errorf("%w: %s after disconnected", ErrIllegalTransition, rec.Event)
	}
	switch rec.Event {
	case TokenRefreshed, RefreshFailed:
		if !f.Conn.Refreshing {
			return fmt.Errorf("%w: %s without refresh_started", ErrIllegalTransition, rec.Event)
		}
		if rec.Event == TokenRefreshed && d.Rotated && d.RefreshFP == "" {
			return fmt.Errorf("%w: token_refreshed rotated without refresh_fp", ErrBadReason)
		}
	case Disconnected:
		if !d.Revocation.Valid() {
			return fmt.Errorf("%w: disconnected with revocation=%q (want %s, %s or %s)", ErrBadReason, d.Revocation, RevocationDone, RevocationUnsupported, RevocationFailed)
		}
	}
	return nil
}

// Connections folds flows into the connections they hold: for each
// provider and account, the connection of the flow that connected last,
// unless it was disconnected (a later connect replaces the token an earlier
// one stored, and a disconnect deletes it). Sorted by provider, account.
func Connections(flows map[string]Flow) []Connection {
	type key struct{ provider, account string }
	latest := map[key]*Connection{}
	for _, f := range flows {
		if f.Conn == nil {
			continue
		}
		k := key{f.Conn.Provider, f.Conn.Account}
		if cur := latest[k]; cur == nil || f.Conn.Connected.After(cur.Connected) ||
			f.Conn.Connected.Equal(cur.Connected) && (f.Conn.seq > cur.seq || f.Conn.seq == cur.seq && f.Conn.Flow > cur.Flow) {
			latest[k] = f.Conn
		}
	}
	out := make([]Connection, 0, len(latest))
	for _, c := range latest {
		if c.Active() {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Provider != out[j].Provider {
			return out[i].Provider < out[j].Provider
		}
		return out[i].Account < out[j].Account
	})
	return out
}
