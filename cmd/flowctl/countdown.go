package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// countdown is the live "time left" line connect shows on a terminal. It
// redraws one line in place with a carriage return; Say prints a message
// above it without garbling it.
type countdown struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	// ctrlC says what Ctrl+C does: connect cancels the flow, wait only
	// stops waiting.
	ctrlC    string
	deadline time.Time
	now      func() time.Time
	stopped  bool
	done     chan struct{}
	exited   chan struct{}
}

// startCountdown draws the line every tick until Stop. A nil countdown
// (no terminal, --json) accepts Say and Stop and does nothing else but
// print Say's message, so callers need no branches.
func startCountdown(w io.Writer, label, ctrlC string, deadline time.Time, now func() time.Time, tick time.Duration) *countdown {
	c := &countdown{w: w, label: label, ctrlC: ctrlC, deadline: deadline, now: now, done: make(chan struct{}), exited: make(chan struct{})}
	c.draw()
	go func() {
		defer close(c.exited)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-c.done:
				return
			case <-t.C:
				c.draw()
			}
		}
	}()
	return c
}

// clearLine returns the cursor to the line's start and erases it.
const clearLine = "\r\x1b[K"

func (c *countdown) draw() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	left := c.deadline.Sub(c.now())
	fmt.Fprintf(c.w, "%s%s %s left (Ctrl+C %s)", clearLine, c.label, formatLeft(left), c.ctrlC)
}

// formatLeft renders time left the way a countdown reads: "4m05s", "42s", "0s".
func formatLeft(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm%02ds", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	}
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// Say prints msg (a line) to w, above the live line when there is one.
func (c *countdown) Say(w io.Writer, msg string) {
	if c == nil {
		fmt.Fprintln(w, msg)
		return
	}
	c.mu.Lock()
	if !c.stopped {
		fmt.Fprint(c.w, clearLine)
	}
	fmt.Fprintln(w, msg)
	c.mu.Unlock()
	c.draw()
}

// Stop erases the line and stops redrawing. It is safe to call twice.
func (c *countdown) Stop() {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	fmt.Fprint(c.w, clearLine)
	close(c.done)
	c.mu.Unlock()
	<-c.exited
}
