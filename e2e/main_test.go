package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowdhq/flowd/internal/hermetic"
)

// binDir holds the flowd and flowctl binaries built once for this run.
var bins struct {
	once           sync.Once
	dir            string
	flowd, flowctl string
	err            error
	buildTime      time.Duration
}

func TestMain(m *testing.M) {
	code := hermetic.Run(m)
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// buildBinaries builds cmd/flowd and cmd/flowctl once per test run, with
// the race detector when the tests themselves run with it, so races in the
// daemon surface here too.
func buildBinaries(t *testing.T) (flowd, flowctl string) {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "flowd-e2e-bin")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/flowdhq/flowd/cmd/flowd", "github.com/flowdhq/flowd/cmd/flowctl")
		start := time.Now()
		cmd := exec.Command("go", args...)
		cmd.Dir = ".." // the module root
		out, err := cmd.CombinedOutput()
		bins.buildTime = time.Since(start)
		if err != nil {
			bins.err = fmt.Errorf("go %v: %v\n%s", args, err, out)
			return
		}
		bins.flowd, bins.flowctl = filepath.Join(dir, "flowd"), filepath.Join(dir, "flowctl")
	})
	if bins.err != nil {
		t.Fatalf("build flowd and flowctl: %v", bins.err)
	}
	t.Logf("flowd and flowctl built in %v (race=%v)", bins.buildTime.Round(time.Millisecond), raceEnabled)
	return bins.flowd, bins.flowctl
}
