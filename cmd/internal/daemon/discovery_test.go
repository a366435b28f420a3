package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowdhq/flowd/engine/fakeclock"
)

// Retries double from 1 s to a 5 min cap, each drawn between half and all
// of its step, so flowds restarted together do not retry in step.
func TestDefaultBackoffIsCappedAndJittered(t *testing.T) {
	for retry := 1; retry <= 40; retry++ {
		step := min(time.Second<<min(retry-1, 30), 5*time.Minute)
		seen := map[time.Duration]bool{}
		for range 50 {
			d := DefaultBackoff(retry)
			require.GreaterOrEqual(t, d, step/2, "retry %d", retry)
			require.LessOrEqual(t, d, step, "retry %d", retry)
			seen[d] = true
		}
		assert.Greater(t, len(seen), 1, "retry %d: the waits are jittered", retry)
	}
	assert.LessOrEqual(t, DefaultBackoff(1_000_000), 5*time.Minute, "no overflow past the cap")
}

// Closing flowd stops the background retries: the timer is stopped, the
// retry goroutine ends (goleak in TestMain checks), and an issuer that
// comes up later is not asked any more.
func TestDiscoveryRetriesStopOnShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	dirs := newDirs(t)
	require.NoError(t, os.WriteFile(dirs.cfg, []byte(fmt.Sprintf("[providers.corp]\nissuer = %q\nclient_id = \"cid\"\n", "http://"+addr)), 0o600))
	o := dirs.opts(&lockingLogs{})
	o.ConfigPath = dirs.cfg
	clk := fakeclock.New(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
	retries := make(chan int, 100)
	o.DiscoveryClock = clk
	o.DiscoveryBackoff = func(n int) time.Duration { retries <- n; return time.Minute }
	d, err := Open(context.Background(), o)
	require.NoError(t, err, "an unreachable issuer does not stop flowd")

	assert.Empty(t, d.Engine.Providers(), "corp is not in the engine yet")
	why, ok := d.discovery.Unavailable("corp")
	require.True(t, ok)
	assert.Contains(t, why, "connection refused")
	require.Equal(t, 1, <-retries)
	for clk.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, d.Close())
	assert.Zero(t, clk.Pending(), "the retry timer was stopped")
	clk.Advance(time.Hour)
	assert.Empty(t, retries, "no retry after shutdown")
}

// A daemon stopped the moment it starts serving leaves no HTTP server
// running: Serve's goroutines may reach their listeners after Shutdown.
// (Found by the shutdown test above: 1 run in 8 leaked a server.)
func TestServeStoppedAtOnceLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for range 20 {
		dirs := newDirs(t)
		o := dirs.opts(&lockingLogs{})
		o.ConfigPath = dirs.cfg
		require.NoError(t, os.WriteFile(dirs.cfg, nil, 0o600))
		d, err := Open(context.Background(), o)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, d.Serve(ctx))
	}
}
