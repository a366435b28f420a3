package states

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// connected is a complete flow that stored a token with a refresh token.
func connected(t *testing.T) (Flow, []Record) {
	t.Helper()
	h := happy(testFlow, 1, t0)
	exp := t0.Add(time.Hour)
	h[3].Data.TokenEvents = &TokenEvents{TokenExpiry: &exp, RefreshFP: "hmac:aaaaaaaaaaaaaaaaaaaaaaaa"}
	return mustFold(t, h...), h
}

// A connection's life, as status shows it: refreshed and rotated, then a
// transient failure (refresh_failing, since the first failure), then a
// rejected grant (needs_reconnect), then disconnected (gone from
// Connections).
func TestConnectionLife(t *testing.T) {
	f, _ := connected(t)
	step := func(e Event, d Data, at time.Duration) {
		t.Helper()
		r := rec(f, e, Complete, d)
		r.Time = t0.Add(at)
		var err error
		f, err = f.Apply(r)
		require.NoError(t, err)
	}
	require.NotNil(t, f.Conn)
	assert.True(t, f.Conn.HasRefreshToken())
	assert.Equal(t, Healthy, f.Conn.HealthAt(t0.Add(2*time.Hour)))

	exp := t0.Add(3 * time.Hour)
	step(RefreshStarted, Data{TokenEvents: &TokenEvents{RefreshFP: "hmac:aaaaaaaaaaaaaaaaaaaaaaaa"}}, time.Hour)
	assert.True(t, f.Conn.Refreshing)
	step(TokenRefreshed, Data{GrantedScopes: []string{"repo", "gist"}, TokenEvents: &TokenEvents{TokenExpiry: &exp, Rotated: true, RefreshFP: "hmac:bbbbbbbbbbbbbbbbbbbbbbbb"}}, time.Hour+time.Second)
	assert.Equal(t, exp, f.Conn.TokenExpiry)
	assert.Equal(t, "hmac:bbbbbbbbbbbbbbbbbbbbbbbb", f.Conn.RefreshFP)
	assert.Equal(t, []string{"repo", "gist"}, f.Conn.Scopes)
	assert.Equal(t, 1, f.Conn.Rotations)
	assert.Equal(t, t0.Add(time.Hour+time.Second), f.Conn.LastRefresh)

	step(RefreshStarted, Data{}, 3*time.Hour)
	step(RefreshFailed, Data{ErrorCode: "network_error", TokenEvents: &TokenEvents{Transient: true}}, 3*time.Hour+time.Second)
	assert.Equal(t, RefreshFailing, f.Conn.HealthAt(t0.Add(4*time.Hour)))
	step(RefreshStarted, Data{}, 4*time.Hour)
	step(RefreshFailed, Data{ErrorCode: "invalid_grant", HTTPStatus: 400}, 4*time.Hour+time.Second)
	assert.Equal(t, NeedsReconnect, f.Conn.HealthAt(t0.Add(5*time.Hour)))
	assert.Equal(t, t0.Add(3*time.Hour+time.Second), f.Conn.FailingSince, "since the first failure of the run")
	assert.Len(t, Connections(map[string]Flow{f.ID: f}), 1)

	step(Revoked, Data{}, 5*time.Hour)
	step(Disconnected, Data{TokenEvents: &TokenEvents{Revocation: RevocationDone}}, 5*time.Hour)
	assert.False(t, f.Conn.Active())
	assert.Empty(t, Connections(map[string]Flow{f.ID: f}))

	_, err := f.Apply(rec(f, RefreshStarted, Complete, Data{}))
	assert.ErrorIs(t, err, ErrIllegalTransition, "nothing refreshes a disconnected token")
}

func TestConnectionGuards(t *testing.T) {
	f, _ := connected(t)
	_, err := f.Apply(rec(f, TokenRefreshed, Complete, Data{}))
	assert.ErrorIs(t, err, ErrIllegalTransition, "an outcome needs its refresh_started")
	_, err = f.Apply(rec(f, Disconnected, Complete, Data{}))
	assert.ErrorIs(t, err, ErrBadReason, "disconnected says what the provider was told")

	g, err := f.Apply(rec(f, RefreshStarted, Complete, Data{}))
	require.NoError(t, err)
	_, err = g.Apply(rec(g, RefreshStarted, Complete, Data{}))
	assert.NoError(t, err, "a claim lost with its engine is taken over")
	_, err = g.Apply(rec(g, TokenRefreshed, Complete, Data{TokenEvents: &TokenEvents{Rotated: true}}))
	assert.ErrorIs(t, err, ErrBadReason, "a rotation names the new refresh token's fingerprint")

	h := happy(testFlow, 1, t0)
	h[3].Data.TokenStored = false
	nf := mustFold(t, h...)
	_, err = nf.Apply(rec(nf, RefreshStarted, Complete, Data{}))
	assert.ErrorIs(t, err, ErrIllegalTransition, "no token stored, no connection")
}

// A later connect of the same provider and account replaces the earlier
// connection; the expired token without a refresh token needs a reconnect.
func TestConnectionsLatestWins(t *testing.T) {
	old, _ := connected(t)
	h := happy("bmV3ZXJGbG93MDAwMDAwMDAy", 10, t0.Add(time.Hour))
	exp := t0.Add(90 * time.Minute)
	h[3].Data.TokenEvents = &TokenEvents{TokenExpiry: &exp}
	newer := mustFold(t, h...)
	cs := Connections(map[string]Flow{old.ID: old, newer.ID: newer})
	require.Len(t, cs, 1)
	assert.Equal(t, newer.ID, cs[0].Flow)
	assert.False(t, cs[0].HasRefreshToken())
	assert.Equal(t, Healthy, cs[0].HealthAt(exp.Add(-time.Second)))
	assert.Equal(t, NeedsReconnect, cs[0].HealthAt(exp))
}

// Two connects of one account stored in the same instant (a coarse clock,
// a fake one): the one later in the log holds the token.
func TestConnectionsSameInstantLaterInLogWins(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(id string, seq uint64, client string) Flow {
		return Flow{ID: id, Conn: &Connection{Flow: id, Provider: "gh", Connected: at, ClientID: client, seq: seq}}
	}
	// The flow id sorts the other way round, so only the log order decides.
	got := Connections(map[string]Flow{"zzz": mk("zzz", 4, "byo"), "aaa": mk("aaa", 9, "")})
	require.Len(t, got, 1)
	assert.Equal(t, "aaa", got[0].Flow)
}
