package main

import (
	"context"
	"os"
	"testing"

	"github.com/flowdhq/flowd/internal/hermetic"
)

// TestMain keeps the tests away from the user's flowd config, state,
// socket and FLOWD_* settings (see internal/hermetic). Started by git or
// kubectl as their helper (asFlowctlEnv), the test binary is flowctl.
func TestMain(m *testing.M) {
	if os.Getenv(asFlowctlEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(hermetic.Run(m))
}
