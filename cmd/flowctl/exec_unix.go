//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// execve is exec(2): flowctl exec becomes the command.
var execve = syscall.Exec

// signalOf is the signal that ended a child, for its 128+n exit code.
func signalOf(ee *exec.ExitError) int {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal())
	}
	return 0
}
