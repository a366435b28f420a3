package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// `flowd &` on a terminal: INFO lines would interleave with flowctl's
// output in the foreground, so only warnings and errors are written,
// unless the user asked for a level.
func TestBackgroundOnTerminalLogsOnlyWarnings(t *testing.T) {
	logAll := func(s logSetup) string {
		var b bytes.Buffer
		h, err := s.handler(&b)
		require.NoError(t, err)
		lg := slog.New(h)
		lg.Info("flowd ready")
		lg.Warn("config readable by others")
		return b.String()
	}
	fg := logAll(logSetup{level: slog.LevelInfo, format: "text"})
	assert.Contains(t, fg, "flowd ready")
	bg := logAll(logSetup{level: slog.LevelInfo, format: "text", background: true})
	assert.NotContains(t, bg, "flowd ready")
	assert.Contains(t, bg, "config readable by others")
	asked := logAll(logSetup{level: slog.LevelInfo, format: "text", background: true, levelSet: true})
	assert.Contains(t, asked, "flowd ready", "-log-level info wins")

	assert.True(t, backgroundGroup(200, 100), "another group has the terminal")
	assert.False(t, backgroundGroup(100, 100), "flowd is in the foreground")
}
