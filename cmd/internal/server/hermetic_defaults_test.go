package server

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowdhq/flowd/cmd/internal/config"
	"github.com/flowdhq/flowd/cmd/internal/wire"
	"github.com/flowdhq/flowd/internal/hermetic"
)

// The tests never see the user's flowd: every default flowd resolves from
// the environment points into the test binary's own empty home, and no
// FLOWD_* setting reaches them (issue 11, part 5). ./tools/test runs the
// suite under tools/hostile-env to prove the rest.
func TestDefaultsAreHermetic(t *testing.T) {
	hermetic.Check(t)
	for name, p := range map[string]string{
		"config file": config.DefaultPath(), "state dir": wire.DefaultStateDir(), "socket": wire.DefaultSocketPath(),
	} {
		assert.True(t, strings.HasPrefix(p, hermetic.Home()+string(filepath.Separator)), "%s %s is outside the test's home %s", name, p, hermetic.Home())
	}
}
