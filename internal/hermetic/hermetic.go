// Package hermetic keeps tests away from the user's own flowd: its config
// file, state directory, socket and FLOWD_* settings.
//
// flowd resolves its defaults from the environment (HOME, XDG_CONFIG_HOME,
// XDG_STATE_HOME, XDG_RUNTIME_DIR, FLOWD_SOCKET, FLOWD_CONFIG, ...). A test
// that leaves a path empty would otherwise read ~/.config/flowd/config.toml
// or write to ~/.local/state/flowd. Every test package that can reach those
// defaults calls Run (or Wrap) from its TestMain: the test binary then sees a
// fresh, empty home and no FLOWD_* setting except the test knobs.
//
// Go's own caches are kept where they were (build cache, module cache, go
// env file) so that tests that build binaries do not rebuild or download
// everything, and so is the Dex binary the end-to-end tests run.
package hermetic

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Knobs are the FLOWD_* variables tests themselves read (test sizes,
// recording directories, helper processes, the Dex binary); they survive.
// Every other FLOWD_* variable is a product setting and is removed.
var Knobs = []string{"FLOWD_DEX_BIN", "FLOWD_RECORD_DIR", "FLOWD_PEER_HELPER_SOCKET", "FLOWD_E2E_DEX_SECRET"}

// knobPrefixes are families of test knobs (FLOWD_CRASH_KILLS, ...).
var knobPrefixes = []string{"FLOWD_CRASH_", "FLOWD_TEST_", "FLOWD_E2E_"}

// homeDir is the hermetic home of this test binary, once set up.
var homeDir string

// Home is the temporary home directory the tests run in ("" before Setup).
func Home() string { return homeDir }

// Run sets up the hermetic environment, runs m and removes the home again.
// Use it as os.Exit(hermetic.Run(m)) in TestMain.
func Run(m interface{ Run() int }) int {
	cleanup, err := Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hermetic:", err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// Wrap returns m with a Run that is hermetic, for goleak.VerifyTestMain.
func Wrap(m interface{ Run() int }) interface{ Run() int } { return wrapped{m} }

type wrapped struct{ m interface{ Run() int } }

func (w wrapped) Run() int { return Run(w.m) }

// Setup points HOME and every XDG base directory at a new empty directory,
// pins Go's caches and the Dex binary to where they were, and unsets every
// FLOWD_* variable but the Knobs. cleanup removes the directory; the
// environment stays hermetic until the process exits.
func Setup() (cleanup func(), err error) {
	// Resolve what must be kept before HOME moves.
	keep := map[string]string{}
	cache, cacheErr := os.UserCacheDir()
	config, configErr := os.UserConfigDir()
	realHome, homeErr := os.UserHomeDir()
	if os.Getenv("GOCACHE") == "" && cacheErr == nil {
		keep["GOCACHE"] = filepath.Join(cache, "go-build")
	}
	if os.Getenv("GOENV") == "" && configErr == nil {
		keep["GOENV"] = filepath.Join(config, "go", "env")
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" && homeErr == nil {
		gopath = filepath.Join(realHome, "go")
		keep["GOPATH"] = gopath
	}
	if os.Getenv("GOMODCACHE") == "" && gopath != "" {
		keep["GOMODCACHE"] = filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
	}
	if os.Getenv("FLOWD_DEX_BIN") == "" && cacheErr == nil {
		// internal/dextest's default, resolved from the real cache.
		keep["FLOWD_DEX_BIN"] = filepath.Join(cache, "flowd", "bin", "dex")
	}

	home, err := os.MkdirTemp("", "flowd-home")
	if err != nil {
		return nil, fmt.Errorf("make a temporary home: %w", err)
	}
	set := map[string]string{
		"HOME":            home,
		"XDG_CONFIG_HOME": filepath.Join(home, ".config"),
		"XDG_STATE_HOME":  filepath.Join(home, ".local", "state"),
		"XDG_DATA_HOME":   filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME":  filepath.Join(home, ".cache"),
		"XDG_RUNTIME_DIR": filepath.Join(home, "run"),
	}
	if err := os.Mkdir(set["XDG_RUNTIME_DIR"], 0o700); err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(k, "XDG_") || strings.HasPrefix(k, "FLOWD_")) && !isKnob(k) {
			os.Unsetenv(k)
		}
	}
	for k, v := range keep {
		os.Setenv(k, v)
	}
	for k, v := range set {
		os.Setenv(k, v)
	}
	homeDir = home
	return func() { os.RemoveAll(home) }, nil
}

func isKnob(k string) bool {
	for _, n := range Knobs {
		if k == n {
			return true
		}
	}
	for _, p := range knobPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// Check fails t if the environment is not the hermetic one Setup made: a
// package whose TestMain forgot Run.
func Check(t testing.TB) {
	t.Helper()
	if homeDir == "" || os.Getenv("HOME") != homeDir {
		t.Fatalf("the test environment is not hermetic: call hermetic.Run from the package's TestMain")
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FLOWD_") && !isKnob(k) {
			t.Fatalf("%s is set in a hermetic test", k)
		}
	}
}
