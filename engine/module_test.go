package engine_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An embedder that imports the engine inherits the core module's
// requirements, so they are only what the core uses (the machine, the
// bbolt log, the OAuth client) and what its tests use; etcd, Prometheus,
// cobra, go-oidc and the rest live in the nested modules (cmd,
// persist/etcdlog, internal/identity, e2e, cluster).
func TestCoreModuleRequiresOnlyTheCore(t *testing.T) {
	out, err := exec.Command("go", "mod", "edit", "-json", filepath.Join("..", "go.mod")).Output()
	require.NoError(t, err)
	var mod struct {
		Module  struct{ Path string }
		Require []struct {
			Path     string
			Indirect bool
		}
	}
	require.NoError(t, json.Unmarshal(out, &mod))
	assert.Equal(t, "github.com/flowdhq/flowd", mod.Module.Path)
	allowed := map[string]bool{
		"github.com/looplab/fsm": true, "go.etcd.io/bbolt": true, "golang.org/x/oauth2": true,
		// tests only
		"github.com/stretchr/testify": true, "go.uber.org/goleak": true, "pgregory.net/rapid": true,
	}
	for _, r := range mod.Require {
		if !r.Indirect {
			assert.True(t, allowed[r.Path], "the core module requires %s directly", r.Path)
		}
	}
	for _, must := range []string{"github.com/looplab/fsm", "go.etcd.io/bbolt", "golang.org/x/oauth2"} {
		found := false
		for _, r := range mod.Require {
			found = found || (r.Path == must && !r.Indirect)
		}
		assert.True(t, found, "%s is a direct requirement, not marked indirect", must)
	}
}
