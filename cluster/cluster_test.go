package cluster_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/etcdlog"
	"github.com/flowdhq/flowd/states"
)

var bg = context.Background()

// start starts a gateway flow on rep.
func start(t *testing.T, rep *replica, req engine.StartRequest) engine.Started {
	t.Helper()
	req.Provider, req.Transport = "gh", states.Gateway
	st, err := rep.Start(bg, req)
	require.NoError(t, err)
	return st
}

func TestCallbackOnAnotherReplicaWakesTheWaiter(t *testing.T) {
	r := newRig(t, 3)
	a, b := r.replica(), r.replica()
	st := start(t, a, engine.StartRequest{})
	state, code := r.prov.Authorize(t, st.AuthURL)

	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	waited := make(chan states.Flow, 1)
	go func() {
		f, err := a.Wait(ctx, state)
		assert.NoError(t, err)
		waited <- f
	}()

	// The load balancer sends the provider's redirect to b.
	f, err := b.Callback(bg, engine.CallbackParams{State: state, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)

	f = <-waited
	assert.Equal(t, states.Complete, f.State, "the waiter on the replica that started the flow is woken")
	f, err = a.Wait(ctx, state)
	require.NoError(t, err, "a Wait after the end returns at once")
	assert.Equal(t, states.Complete, f.State)
	_, tok, err := a.Token(bg, engine.TokenKey{Provider: "gh"})
	require.NoError(t, err, "the token stored by b is there for a")
	assert.Equal(t, state, tok.Flow)
	a.waitLive(t, 0)
	b.waitLive(t, 0)
}

func TestSameCallbackOnTwoReplicasExchangesOnce(t *testing.T) {
	r := newRig(t, 3)
	reps := []*replica{r.replica(), r.replica()}
	const flows = 10
	type flow struct{ state, code string }
	var fs []flow
	for i := range flows {
		st := start(t, reps[i%2], engine.StartRequest{Account: string(rune('a' + i))})
		state, code := r.prov.Authorize(t, st.AuthURL)
		fs = append(fs, flow{state, code})
	}
	for _, rep := range reps {
		rep.waitLive(t, flows)
	}
	for _, f := range fs {
		var wg sync.WaitGroup
		gate := make(chan struct{})
		results := make([]error, len(reps))
		for i, rep := range reps {
			wg.Go(func() {
				<-gate
				_, results[i] = rep.Callback(bg, engine.CallbackParams{State: f.state, Code: f.code})
			})
		}
		close(gate)
		wg.Wait()
		ok := 0
		for _, err := range results {
			if err == nil {
				ok++
			} else {
				assert.ErrorIs(t, err, engine.ErrNotAwaiting, "the other replica records the callback as ignored")
			}
		}
		assert.Equal(t, 1, ok, "one replica completes the flow")
		assert.Equal(t, 1, r.prov.Uses(f.code), "the code is redeemed exactly once")
		h, err := reps[0].History(bg, f.state)
		require.NoError(t, err)
		_, err = states.Fold(h)
		require.NoError(t, err, "the history replays")
	}
	assert.EqualValues(t, flows, r.prov.Calls(), "one token request per flow")
}

func TestReplicaGoneMidFlow(t *testing.T) {
	r := newRig(t, 3)
	a, b, c := r.replica(), r.replica(), r.replica()
	const ttl = 3 * time.Second
	doomed := start(t, a, engine.StartRequest{Account: "doomed", TTL: ttl})
	finished := start(t, a, engine.StartRequest{Account: "finished", TTL: time.Minute})
	b.waitLive(t, 2)
	c.waitLive(t, 2)
	a.close()

	// Its callback lands on another replica, which finishes it.
	state, code := r.prov.Authorize(t, finished.AuthURL)
	f, err := c.Callback(bg, engine.CallbackParams{State: state, Code: code})
	require.NoError(t, err)
	assert.Equal(t, states.Complete, f.State)

	// The other expires at its deadline, once, on whichever replica's
	// timer wins.
	ctx, cancel := context.WithTimeout(bg, ttl+15*time.Second)
	defer cancel()
	f, err = b.Wait(ctx, doomed.ID)
	require.NoError(t, err)
	assert.Equal(t, states.Expired, f.State)
	assert.False(t, f.Ended.Before(doomed.Deadline), "not before its deadline")
	h, err := c.History(bg, doomed.ID)
	require.NoError(t, err)
	assert.Equal(t, []states.Event{states.Created, states.URLIssued, states.DeadlinePassed}, events(h), "expired exactly once")
	b.waitLive(t, 0)
	c.waitLive(t, 0)
}

func events(h []states.Record) []states.Event {
	out := make([]states.Event, len(h))
	for i, r := range h {
		out[i] = r.Event
	}
	return out
}

// retry calls fn until it succeeds or the deadline passes, riding out an
// election: an append refused as unavailable during one is retried.
func retry(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if !errors.Is(err, etcdlog.ErrUnavailable) || time.Now().After(deadline) {
			require.NoError(t, err, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMemberStoppedLosesNothing(t *testing.T) {
	r := newRig(t, 3)
	a, b := r.replica(), r.replica()
	acked := map[string]states.State{} // flow -> state an acknowledged transition left it in
	work := func(round int) {
		for i := range 4 {
			var st engine.Started
			retry(t, "start", func() (err error) {
				st, err = a.Start(bg, engine.StartRequest{Provider: "gh", Transport: states.Gateway, Account: string(rune('a' + round*4 + i))})
				return err
			})
			acked[st.ID] = states.AwaitingCallback
			if i%2 == 0 {
				continue
			}
			state, code := r.prov.Authorize(t, st.AuthURL)
			var f states.Flow
			var err error
			for deadline := time.Now().Add(20 * time.Second); ; {
				f, err = b.Callback(bg, engine.CallbackParams{State: state, Code: code})
				if !errors.Is(err, etcdlog.ErrUnavailable) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			require.NoError(t, err)
			acked[state] = f.State
		}
	}
	work(0)
	for round, which := range []string{"follower", "leader"} {
		leader := r.etcd.Leader()
		victim := leader
		if which == "follower" {
			victim = (leader + 1) % r.etcd.Len()
		}
		r.etcd.Stop(victim)
		work(round + 1) // two of three members serve: flows go on
		r.etcd.Restart(victim)
	}
	// A replica opened afterwards finds every acknowledged transition.
	c := r.replica()
	for id, want := range acked {
		f, err := c.Status(bg, id)
		require.NoError(t, err)
		assert.Equal(t, want, f.State, "flow %s", states.ShortID(id))
	}
	c.waitLive(t, 6)
}

func TestQuorumLostIsReportedAndRecovers(t *testing.T) {
	r := newRig(t, 3)
	a, b := r.replica(), r.replica()
	st := start(t, a, engine.StartRequest{})
	b.waitLive(t, 1)
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()
	waited := make(chan states.Flow, 1)
	go func() {
		f, err := a.Wait(ctx, st.ID)
		assert.NoError(t, err)
		waited <- f
	}()

	r.etcd.Stop(0)
	r.etcd.Stop(1)
	_, err := a.Start(bg, engine.StartRequest{Provider: "gh", Transport: states.Gateway, Account: "other"})
	require.ErrorIs(t, err, etcdlog.ErrUnavailable, "a store without quorum is reported as unavailable")
	assert.Contains(t, err.Error(), r.etcd.Endpoints()[2], "the error names the endpoints")
	state, code := r.prov.Authorize(t, st.AuthURL)
	_, err = b.Callback(bg, engine.CallbackParams{State: state, Code: code})
	require.ErrorIs(t, err, etcdlog.ErrUnavailable)
	assert.Zero(t, r.prov.Uses(code), "no code is redeemed while its exchange cannot be recorded")

	r.etcd.RestartAsync(0)
	r.etcd.RestartAsync(1)
	r.etcd.WaitReady(0)
	r.etcd.WaitReady(1)
	var f states.Flow
	retry(t, "callback once quorum is back", func() (err error) {
		f, err = b.Callback(bg, engine.CallbackParams{State: state, Code: code})
		return err
	})
	assert.Equal(t, states.Complete, f.State)
	select {
	case f = <-waited:
		assert.Equal(t, states.Complete, f.State, "the waiter on the other replica is woken after the outage")
	case <-ctx.Done():
		t.Fatal("the waiter was not woken after quorum returned")
	}
}
