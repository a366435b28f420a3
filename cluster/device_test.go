package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/states"
)

// A device flow on the etcd store outlives the replica polling it: that
// replica dies (its etcd client is gone without a word, so its lease must
// run out), the other takes the polling over once the claim lapses, sees
// the user's approval and stores the token. Until then the two never poll
// at one point of the schedule: the strict provider answers slow_down to
// a poll sooner than its interval, and never has to.
func TestDeviceFlowOutlivesItsPollingReplica(t *testing.T) {
	r := newRig(t, 1)
	r.prov.SetDevicePollInterval(time.Second)
	r.cfg.Providers[0].DeviceAuthURL = r.prov.DeviceAuthURL
	const claimTTL = 2 * time.Second

	// a's log has a client of its own, closed below as a crash closes it.
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	client, err := clientv3.New(clientv3.Config{Endpoints: r.etcd.Endpoints(), DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	la, err := etcdlog.Open(ctx, etcdlog.Options{Client: client, Prefix: r.prefix, Key: r.key, RequestTimeout: requestTimeout, ClaimTTL: claimTTL})
	require.NoError(t, err)
	cfg := r.cfg
	cfg.Log = la
	a, err := engine.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	b := r.replica()

	st, err := a.Start(ctx, engine.StartRequest{Provider: "gh", Transport: states.Device})
	require.NoError(t, err)
	b.waitLive(t, 1)
	require.Eventually(t, func() bool { d, _ := r.prov.Device(st.Device.UserCode); return d.Polls >= 3 },
		20*time.Second, 10*time.Millisecond, "the flow is polled")

	// The poller dies: its engine stops and its etcd client goes, with no
	// lease revoked. Whichever replica held the claim, b must poll on.
	require.NoError(t, a.Close())
	require.NoError(t, client.Close())
	d, _ := r.prov.Device(st.Device.UserCode)
	require.True(t, r.prov.ApproveDevice(st.Device.UserCode))

	wctx, wcancel := context.WithTimeout(bg, 10*claimTTL)
	defer wcancel()
	f, err := b.Wait(wctx, st.ID)
	require.NoError(t, err, "b completes the flow once a's claim lapsed")
	assert.Equal(t, states.Complete, f.State)
	assert.True(t, f.TokenStored)
	after, _ := r.prov.Device(st.Device.UserCode)
	assert.Greater(t, after.Polls, d.Polls)
	assert.Equal(t, 0, after.SlowDowns, "never two polls at one point of the schedule")
	_, _, err = b.Token(bg, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
}
