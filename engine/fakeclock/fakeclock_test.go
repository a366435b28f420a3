package fakeclock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/flowdhq/flowd/engine/fakeclock"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestAdvanceRunsDueTimersInOrderAtTheirTime(t *testing.T) {
	c := fakeclock.New(t0)
	var got []time.Duration
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second, 10 * time.Second} {
		c.AfterFunc(d, func() { got = append(got, c.Now().Sub(t0)) })
	}
	c.Advance(5 * time.Second)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, got, "each timer sees its own deadline as now")
	assert.Equal(t, t0.Add(5*time.Second), c.Now())
	assert.Equal(t, 1, c.Pending())
	assert.Equal(t, 3, c.Fired())
}

func TestStopAndNeverInline(t *testing.T) {
	c := fakeclock.New(t0)
	ran := 0
	tm := c.AfterFunc(time.Second, func() { ran++ })
	assert.True(t, tm.Stop())
	assert.False(t, tm.Stop(), "stopping twice reports false")
	c.AfterFunc(0, func() { ran++ })
	assert.Zero(t, ran, "AfterFunc never runs f itself, even when due")
	c.Advance(time.Hour)
	assert.Equal(t, 1, ran)
	assert.Zero(t, c.Pending())
}

// A timer armed by a running timer runs in the same Advance when it falls due.
func TestTimersArmedByTimers(t *testing.T) {
	c := fakeclock.New(t0)
	var at []time.Duration
	var tick func()
	tick = func() {
		at = append(at, c.Now().Sub(t0))
		c.AfterFunc(time.Second, tick)
	}
	c.AfterFunc(time.Second, tick)
	c.Advance(3 * time.Second)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, at)
	assert.Equal(t, 1, c.Pending())
	c.Set(t0.Add(4 * time.Second))
	assert.Len(t, at, 4)
}
