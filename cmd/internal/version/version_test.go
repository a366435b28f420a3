package version

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFromBuildInfo(t *testing.T) {
	bi := func(v string, settings ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Path: "github.com/flowdhq/flowd", Version: v}}
		for i := 0; i+1 < len(settings); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return b
	}
	assert.Equal(t, "v1.2.3", FromBuildInfo(bi("v1.2.3", "vcs.revision", "0123456789abcdef")), "go install module@version")
	assert.Equal(t, "0123456789ab", FromBuildInfo(bi("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "false")), "a clean checkout")
	assert.Equal(t, "0123456789ab-modified", FromBuildInfo(bi("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "true")))
	assert.NotContains(t, FromBuildInfo(bi("(devel)")), "(devel)", "never (devel)")
}
