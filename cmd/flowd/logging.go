package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// logSetup is how flowd logs, decided from the flags and from where stderr
// goes.
type logSetup struct {
	level  slog.Level
	format string
	// levelSet is true when -log-level or FLOWD_LOG_LEVEL chose the level:
	// then flowd logs at it wherever stderr goes.
	levelSet bool
	// journal is true when stderr is systemd's journal, which stamps every
	// line itself: slog's time would be a second timestamp.
	journal bool
	// background is true when stderr is a terminal whose foreground is
	// another process group (`flowd &` in a shell): flowd's INFO lines
	// would land in the middle of whatever runs in the foreground.
	background bool
}

// handler builds the slog handler for w.
func (s logSetup) handler(w io.Writer) (slog.Handler, error) {
	level := s.level
	if s.background && !s.levelSet && level < slog.LevelWarn {
		// Started in the background on a terminal: stay quiet but for
		// warnings and errors, which the user must see. -log-level info
		// (or running in the foreground, or as a service) shows the rest.
		level = slog.LevelWarn
	}
	opts := &slog.HandlerOptions{Level: level}
	if s.journal {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	switch strings.ToLower(s.format) {
	case "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("-log-format %q: use text or json", s.format)
}

// stderrIsJournal reports whether f is the stream systemd connected to the
// journal. systemd sets JOURNAL_STREAM to "<device>:<inode>" of that
// stream; comparing with f's own keeps a child that inherited the variable
// but writes elsewhere (a pipe, a file) from losing its timestamps
// (systemd.exec(5), JOURNAL_STREAM).
func stderrIsJournal(f *os.File, journalStream string) bool {
	dev, ino, ok := strings.Cut(journalStream, ":")
	if !ok || f == nil {
		return false
	}
	wantDev, err1 := strconv.ParseUint(dev, 10, 64)
	wantIno, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == wantDev && uint64(st.Ino) == wantIno
}

// inBackgroundOnTerminal reports whether f is a terminal that another
// process group has in the foreground: flowd was started with `flowd &`.
func inBackgroundOnTerminal(f *os.File) bool {
	if f == nil || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	fg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	if err != nil {
		// Not our controlling terminal: nothing is "in front" of us.
		return false
	}
	return backgroundGroup(fg, unix.Getpgrp())
}

// backgroundGroup is true when the terminal's foreground process group fg
// is not ours.
func backgroundGroup(fg, ours int) bool { return fg > 0 && fg != ours }
