// Package fakeclock is a manual clock for engine tests: time stands still
// until the test calls Advance, which runs every due timer in the calling
// goroutine, in deadline order, before it returns. A test can step a flow
// past its deadline and assert the result on the next line.
package fakeclock

import (
	"sort"
	"sync"
	"time"

	"github.com/flowdhq/flowd/engine"
)

// Clock is a manual engine.Clock. The zero value is not usable; call New.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
	fired  int
}

type timer struct {
	c       *Clock
	at      time.Time
	f       func()
	stopped bool
}

// New returns a clock standing at now.
func New(now time.Time) *Clock { return &Clock{now: now} }

// Now implements engine.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements engine.Clock. f runs during a later Advance, never
// inside AfterFunc, even when d <= 0.
func (c *Clock) AfterFunc(d time.Duration, f func()) engine.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.stopped {
		return false
	}
	t.stopped = true
	return true
}

// Advance moves the clock forward by d and runs the timers that fall due,
// earliest first, each at its own deadline. Timers armed by those timers run
// too if they fall due before the new time.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *timer
		for i, t := range c.timers {
			if t.stopped {
				continue
			}
			if !t.at.After(end) {
				next = t
				c.timers = append(c.timers[:i:i], c.timers[i+1:]...)
			}
			break
		}
		if next == nil {
			c.now = end
			c.timers = live(c.timers)
			c.mu.Unlock()
			return
		}
		next.stopped = true
		if next.at.After(c.now) {
			c.now = next.at
		}
		c.fired++
		c.mu.Unlock()
		next.f()
	}
}

// Set moves the clock to t (forward only) as Advance does.
func (c *Clock) Set(t time.Time) {
	c.Advance(t.Sub(c.Now()))
}

// Fired reports how many timers have run.
func (c *Clock) Fired() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

// Pending reports how many timers are armed and not yet run.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(live(c.timers))
}

func live(ts []*timer) []*timer {
	out := ts[:0]
	for _, t := range ts {
		if !t.stopped {
			out = append(out, t)
		}
	}
	return out
}
