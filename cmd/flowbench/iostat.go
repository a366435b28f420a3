package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// ioCount is what the process has passed to write syscalls so far, from
// /proc/self/io (Linux); ok is false elsewhere. The benchmark's phases run
// one at a time, so the difference across a phase is that phase's writes:
// the evidence for where a durable append's time goes.
type ioCount struct {
	bytes, calls float64
	ok           bool
}

func readIO() ioCount {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return ioCount{}
	}
	defer f.Close()
	var c ioCount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		switch k {
		case "wchar":
			c.bytes, c.ok = n, true
		case "syscw":
			c.calls = n
		}
	}
	return c
}

func (c ioCount) sub(d ioCount) ioCount {
	return ioCount{bytes: c.bytes - d.bytes, calls: c.calls - d.calls, ok: c.ok && d.ok}
}

// add sums two counts; the zero ioCount is an empty sum, not a failed read.
func (c ioCount) add(d ioCount) ioCount {
	if c == (ioCount{}) {
		return d
	}
	return ioCount{bytes: c.bytes + d.bytes, calls: c.calls + d.calls, ok: c.ok && d.ok}
}
