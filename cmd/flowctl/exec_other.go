//go:build !unix

package main

import "os/exec"

// execve is nil where there is no exec(2): flowctl exec runs the command
// as a child and passes its exit code on.
var execve func(path string, argv, env []string) error

func signalOf(*exec.ExitError) int { return 0 }
