// Package e2e holds flowd's end-to-end tests against a real OAuth server
// (Dex, see internal/dextest): the engine embedded in-process, and the
// flowd and flowctl binaries as a user runs them. It has no code of its own.
//
// The tests need the dex binary; build it with tools/dex/build.sh. Without
// it they are skipped, except under CI=true, where they fail.
package e2e
