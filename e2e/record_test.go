package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/internal/dextest"
	"github.com/flowdhq/flowd/internal/oauthtest"
	"github.com/flowdhq/flowd/replay"
	"github.com/flowdhq/flowd/states"
)

// recordDirEnv names the directory TestDexRecordings writes its exports
// to. A relative path is taken from the module root, so
//
//	FLOWD_RECORD_DIR=testdata/replay/dex go test ./e2e -run TestDexRecordings
//
// refreshes the checked-in Dex recordings. Without it the runs are still
// exported and replayed, and nothing is written.
const recordDirEnv = "FLOWD_RECORD_DIR"

// Runs against real Dex whose exports are checked in under
// testdata/replay/dex and replayed by `go test ./replay`. Every run exports
// the engine's log (Engine.Export, as `flowctl log export` does) and
// requires that it replays through the current machine to the outcome the
// run saw. With FLOWD_RECORD_DIR set it also writes name.jsonl and its
// name.golden (the replay's output) there. Ids and times differ on every
// run: a checked-in recording is history, kept as recorded.
func TestDexRecordings(t *testing.T) {
	dir := os.Getenv(recordDirEnv)
	if dir != "" && !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir)
	}
	ctx := context.Background()

	t.Run("connect", func(t *testing.T) {
		r := newEngineRig(t, dextest.Options{})
		f := r.connect(dexProvider)
		require.Equal(t, states.Complete, f.State, "flow %+v", f)
		got := r.exportAndReplay(dir, "connect")
		assert.Equal(t, states.Exchanged, got.Reason)
		assert.True(t, got.TokenStored)
		assert.Equal(t, f.GrantedScopes, got.GrantedScopes)
		assert.Equal(t, []string{"openid", "email", "offline_access"}, got.GrantedScopes,
			"dex sends no scope field: the requested scopes are granted")
	})

	t.Run("denied", func(t *testing.T) {
		r := newEngineRig(t, dextest.Options{})
		st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider, Scopes: []string{"openid", dextest.DeniedScope}})
		require.NoError(t, err)
		cb := r.browse(r.dex.Browser(), st.AuthURL)
		require.NotEmpty(t, cb.Error, "dex refuses the scope with an error redirect")
		f, err := r.eng.Callback(ctx, cb)
		require.NoError(t, err)
		require.Equal(t, states.ProviderDenied, f.Reason, "flow %+v", f)
		got := r.exportAndReplay(dir, "denied")
		assert.Equal(t, states.Error, got.State)
		assert.Equal(t, states.ProviderDenied, got.Reason)
		assert.Equal(t, cb.Error, got.ErrorCode)
		assert.False(t, got.TokenStored)
		assert.Empty(t, got.GrantedScopes)
	})

	t.Run("restart_before_callback", func(t *testing.T) {
		// flowd restarts while the user logs in at Dex; the callback lands
		// on the new engine. The log spans two opens of the database.
		r := newEngineRig(t, dextest.Options{})
		st, err := r.eng.Start(ctx, engine.StartRequest{Provider: dexProvider})
		require.NoError(t, err)
		r.close()
		cb := r.browse(r.dex.Browser(), st.AuthURL)
		r.open()
		f, err := r.eng.Callback(ctx, cb)
		require.NoError(t, err)
		require.Equal(t, states.Complete, f.State, "flow %+v", f)
		got := r.exportAndReplay(dir, "restart_before_callback")
		assert.Equal(t, states.Exchanged, got.Reason)
		assert.True(t, got.TokenStored)
	})

	t.Run("device", func(t *testing.T) {
		// The device grant: a poll before the user enters the code (Dex
		// says authorization_pending: nothing recorded), flowd restarts
		// while the user has the code, the user logs in, and the next poll
		// on the recorded schedule gets the token.
		r := newEngineRig(t, dextest.Options{})
		st, err := r.eng.Start(ctx, engine.StartRequest{Provider: deviceProvider, Transport: states.Device})
		require.NoError(t, err)
		require.NotNil(t, st.Device)
		require.Equal(t, r.dex.Issuer+"/device", st.Device.VerificationURI)
		r.clock.Advance(st.PollInterval)
		require.Equal(t, 1, r.dex.TokenRequests(oauthtest.DeviceGrantType), "one poll at the interval")
		r.restart()
		require.NoError(t, r.dex.Browser().ApproveDevice(ctx, st.Device.VerificationURI, st.Device.UserCode))
		r.clock.Advance(st.PollInterval)
		f, err := r.eng.Status(ctx, st.ID)
		require.NoError(t, err)
		require.Equal(t, states.Complete, f.State, "flow %+v", f)
		assert.Equal(t, 2, r.dex.TokenRequests(oauthtest.DeviceGrantType))
		tok, _, err := r.eng.Token(ctx, engine.TokenKey{Provider: deviceProvider})
		require.NoError(t, err)
		claims := r.userinfo(tok.AccessToken)
		assert.Equal(t, "kilgore@kilgore.trout", claims["email"])
		got := r.exportAndReplay(dir, "device")
		assert.Equal(t, states.Exchanged, got.Reason)
		assert.Equal(t, states.Device, got.Transport)
		hist, err := r.eng.History(ctx, st.ID)
		require.NoError(t, err)
		var evs []states.Event
		for _, rec := range hist {
			evs = append(evs, rec.Event)
		}
		assert.Equal(t, []states.Event{states.Created, states.DeviceAuthorized, states.ExchangeSucceeded}, evs)
	})
}

// exportAndReplay exports the engine's whole log, checks it holds no
// secret seen in the run, replays it, and returns the last flow it holds
// as the replay left it. With dir set it writes name.jsonl and
// name.golden there.
func (r *engineRig) exportAndReplay(dir, name string) states.Flow {
	t := r.t
	t.Helper()
	var log bytes.Buffer
	err := r.eng.Export(context.Background(), engine.ExportQuery{}, func(rec states.Record) error {
		line, err := rec.Encode()
		if err != nil {
			return err
		}
		log.Write(line)
		log.WriteByte('\n')
		return nil
	})
	require.NoError(t, err, "export the log")
	require.Empty(t, r.dex.Secrets.Leaks(log.Bytes()), "secrets in the export")

	var out bytes.Buffer
	sum, err := replay.Run(bytes.NewReader(log.Bytes()), &out)
	require.NoError(t, err, "the engine's export of a Dex run does not replay:\n%s", out.String())
	require.NotEmpty(t, sum.Flows)
	last := sum.Flows[len(sum.Flows)-1]
	require.False(t, last.State.Live(), "the run ended its flow")

	if dir != "" {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		path := filepath.Join(dir, name+".jsonl")
		require.NoError(t, os.WriteFile(path, log.Bytes(), 0o644))
		require.NoError(t, os.WriteFile(strings.TrimSuffix(path, ".jsonl")+".golden", out.Bytes(), 0o644))
		t.Logf("recorded %s (%d records)", path, sum.Records)
	}
	return last
}
