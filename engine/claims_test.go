package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/memlog"
	"github.com/flowdhq/flowd/states"
)

// claimTable holds the claims of a shared log's writers, as the etcd log
// keeps them under each writer's lease.
type claimTable struct {
	mu      sync.Mutex
	holders map[string]string // claim key -> writer
}

// lapse drops writer's claims: its process died and its lease ran out.
func (t *claimTable) lapse(writer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, w := range t.holders {
		if w == writer {
			delete(t.holders, k)
		}
	}
}

func (t *claimTable) holder(key string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.holders[key]
}

// claimingLog is one writer's handle on a sharedLog whose claims are in
// table: each engine opens its own, as each replica opens its etcd log.
type claimingLog struct {
	sharedLog
	table  *claimTable
	writer string
}

var _ engine.Claimer = claimingLog{}

func (l claimingLog) Claim(ctx context.Context, key string) (bool, error) {
	l.table.mu.Lock()
	defer l.table.mu.Unlock()
	if w, ok := l.table.holders[key]; ok {
		return w == l.writer, nil
	}
	l.table.holders[key] = l.writer
	return true, nil
}

func (l claimingLog) Release(ctx context.Context, key string) error {
	l.table.mu.Lock()
	defer l.table.mu.Unlock()
	if l.table.holders[key] == l.writer {
		delete(l.table.holders, key)
	}
	return nil
}

// claimingReplicas is a device harness whose engine is writer "a" of a
// shared log with claims, and a second engine, writer "b", on the same
// log, clock and provider.
func claimingReplicas(t *testing.T) (*harness, *engine.Engine, *claimTable) {
	t.Helper()
	table := &claimTable{holders: map[string]string{}}
	shared := sharedLog{Log: memlog.New()}
	h := newDeviceHarness(t, nil, func(c *engine.Config) { c.Log = claimingLog{shared, table, "a"} })
	cfg := h.cfg
	cfg.Log = claimingLog{shared, table, "b"}
	b, err := engine.Open(h.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return h, b, table
}

// Every replica holds every device flow, and one polls it at each point of
// the schedule, whichever took the flow's claim: two would poll faster
// than the interval, and the strict provider would answer slow_down. When
// the poller dies, its claim lapses and the other replica polls on, so
// the user's approval is seen and the flow completes; the finished flow's
// claim is released.
func TestSharedDeviceFlowPolledByOneReplicaAndTakenOver(t *testing.T) {
	h, b, table := claimingReplicas(t)
	st := h.startDevice()
	holds(t, b, 1)
	for range 3 {
		h.clk.Advance(5 * time.Second)
	}
	assert.Equal(t, 3, h.polls(st).Polls, "one poll per point of the schedule, not one per replica")
	assert.Equal(t, 0, h.polls(st).SlowDowns)

	poller, other := h.e, b
	if table.holder("device/"+st.ID) == "b" {
		poller, other = b, h.e
	}
	require.NoError(t, poller.Close())
	table.lapse(map[*engine.Engine]string{h.e: "a", b: "b"}[poller])

	h.clk.Advance(5 * time.Second)
	assert.Equal(t, 4, h.polls(st).Polls, "the other replica polls at the next point")
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	f, err := other.Wait(ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)
	assert.True(t, f.TokenStored)
	assert.Equal(t, 0, h.polls(st).SlowDowns)
	_, _, err = other.Token(h.ctx, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return table.holder("device/"+st.ID) == "" }, 5*time.Second, time.Millisecond,
		"the finished flow's claim is released")
	checkReplay(t, h.log)
}

// One replica on the shared log (flowd on the etcd store, restarted): the
// restarted process polls the device flows the old one left, once the old
// one's claim lapsed, instead of leaving them to expire unseen.
func TestSharedDeviceFlowResumedAfterRestart(t *testing.T) {
	h, b, table := claimingReplicas(t)
	require.NoError(t, b.Close()) // one replica only
	st := h.startDevice()
	h.clk.Advance(5 * time.Second)
	require.Equal(t, 1, h.polls(st).Polls)
	require.Equal(t, "a", table.holder("device/"+st.ID))

	require.NoError(t, h.e.Close())
	table.lapse("a")
	h.cfg.Log = claimingLog{h.cfg.Log.(claimingLog).sharedLog, table, "a2"}
	h.open()
	h.clk.Advance(5 * time.Second)
	assert.Equal(t, 2, h.polls(st).Polls, "the restarted replica polls")
	require.True(t, h.prov.ApproveDevice(st.Device.UserCode))
	h.clk.Advance(5 * time.Second)
	assert.Equal(t, states.Complete, h.status(st.ID).State)
}

// While the old process's claim has not lapsed (it died a moment ago), the
// restarted one does not poll: it looks again at every point of the
// schedule, and polls once the claim is free.
func TestSharedDevicePollWaitsForTheClaim(t *testing.T) {
	h, b, table := claimingReplicas(t)
	st := h.startDevice()
	holds(t, b, 1)
	table.mu.Lock()
	table.holders["device/"+st.ID] = "gone" // a writer that died
	table.mu.Unlock()
	for range 3 {
		h.clk.Advance(5 * time.Second)
	}
	assert.Equal(t, 0, h.polls(st).Polls, "no replica polls a flow another holds")
	table.lapse("gone")
	h.clk.Advance(5 * time.Second)
	assert.Equal(t, 1, h.polls(st).Polls)
}

// A flow canceled while its poll was out ends on the engine that polled
// it, which releases the claim it took for that poll: the claims of
// finished flows do not stay in the shared log until the process stops.
func TestSharedDeviceClaimReleasedWhenTheFlowEndsMidPoll(t *testing.T) {
	h, b, table := claimingReplicas(t)
	require.NoError(t, b.Close()) // one replica: it is the poller
	st := h.startDevice()
	release := h.prov.Hold()
	advanced := make(chan struct{})
	go func() { h.clk.Advance(5 * time.Second); close(advanced) }()
	h.prov.WaitEntered(t)
	require.Equal(t, "a", table.holder("device/"+st.ID), "claimed for the poll")
	_, err := h.e.Cancel(h.ctx, st.ID)
	require.NoError(t, err)
	release()
	<-advanced
	require.Eventually(t, func() bool { return table.holder("device/"+st.ID) == "" }, 5*time.Second, time.Millisecond,
		"the claim is released once the poll is back")
}
