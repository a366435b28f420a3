package redirect_test

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The package is what an embedder mounts; it must not pull a server or any
// dependency the engine does not already have: the standard library,
// engine and states only.
func TestImportsOnlyStdlibEngineAndStates(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ImportsOnly)
	require.NoError(t, err)
	require.NotEmpty(t, pkgs)
	for _, pkg := range pkgs {
		for name, f := range pkg.Files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				stdlib := !strings.Contains(strings.Split(path, "/")[0], ".")
				ok := stdlib || path == "github.com/flowdhq/flowd/engine" || path == "github.com/flowdhq/flowd/states"
				assert.True(t, ok, "%s imports %s", name, path)
			}
		}
	}
}
