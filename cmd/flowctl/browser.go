package main

import (
	"io"
	"strings"

	"github.com/cli/browser"
)

// Browser opens a URL for the user. Tests use a fake that records the URL
// and never opens anything.
type Browser interface {
	Open(url string) error
}

// systemBrowser opens the user's browser with github.com/cli/browser.
type systemBrowser struct{}

func (systemBrowser) Open(u string) error {
	// The opener's own chatter (xdg-open, open) must not land on stdout:
	// with --json stdout carries exactly one object.
	browser.Stdout = io.Discard
	browser.Stderr = io.Discard
	return browser.OpenURL(u)
}

// hasDisplay reports whether a browser opened here would be seen by the
// user. Over SSH it would open on the remote machine, if anywhere; on
// Linux and the BSDs a graphical session sets DISPLAY or WAYLAND_DISPLAY.
func hasDisplay(goos string, getenv func(string) string) bool {
	if overSSH(getenv) != "" {
		return false
	}
	switch goos {
	case "darwin", "windows", "ios", "android":
		return true
	}
	return strings.TrimSpace(getenv("DISPLAY")) != "" || strings.TrimSpace(getenv("WAYLAND_DISPLAY")) != ""
}
