package main

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The service files in dist/ start flowd as it runs: the binary, with
// flags flowd has, and the signals flowd handles (SIGHUP reloads, SIGTERM
// stops cleanly: TestBinaryReloadsOnSIGHUP, TestBinaryStopsCleanlyOnSIGTERM).
// There is no systemd or launchd on the test machine to load them.
func TestServiceFilesStartFlowdAsItRuns(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "dist", "flowd.service"))
	require.NoError(t, err)
	keys := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			keys[k] = v
		}
	}
	exec := strings.Fields(keys["ExecStart"])
	require.NotEmpty(t, exec)
	assert.Equal(t, "flowd", filepath.Base(exec[0]))
	var help bytes.Buffer
	run([]string{"-h"}, &help)
	for _, arg := range exec[1:] {
		if strings.HasPrefix(arg, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
			assert.Contains(t, help.String(), "  -"+name+" ", "ExecStart passes a flag flowd does not have")
		}
	}
	assert.Equal(t, "/bin/kill -HUP $MAINPID", keys["ExecReload"])
	assert.Equal(t, "SIGTERM", keys["KillSignal"])
	assert.Equal(t, "default.target", keys["WantedBy"])

	plist, err := os.ReadFile(filepath.Join("..", "..", "dist", "local.flowd.plist"))
	require.NoError(t, err)
	var doc struct {
		Dict struct {
			Inner []byte `xml:",innerxml"`
		} `xml:"dict"`
	}
	require.NoError(t, xml.Unmarshal(plist, &doc), "the plist is not well-formed XML")
	inner := string(doc.Dict.Inner)
	assert.Contains(t, inner, "<string>local.flowd</string>")
	assert.Contains(t, inner, "<string>@HOME@/go/bin/flowd</string>", "the README's sed step replaces @HOME@")
}

// systemd's own check of the unit, where systemd-analyze is installed:
// unknown keys and bad values are reported on stderr.
func TestServiceUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "dist", "flowd.service"))
	require.NoError(t, err)
	dir := t.TempDir()
	rt := filepath.Join(dir, "rt")
	require.NoError(t, os.Mkdir(rt, 0o700))
	// verify checks that ExecStart exists: point it at the real binary.
	path := filepath.Join(dir, "flowd.service")
	require.NoError(t, os.WriteFile(path, bytes.ReplaceAll(unit, []byte("%h/go/bin/flowd"), []byte(flowdBinary(t))), 0o600))
	cmd := exec.Command(analyze, "--user", "verify", path)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify complains")
}
