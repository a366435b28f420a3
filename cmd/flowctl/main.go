// Command flowctl is the client of flowd: it asks the daemon to start,
// wait for, cancel and inspect OAuth connect flows. It never runs a flow
// itself; without flowd it exits 3 and says how to start it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first Ctrl+C cancels ctx: connect then cancels its flow in flowd
	// and exits 130.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
