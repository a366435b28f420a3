package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The service token is compared in constant time: the code uses
// crypto/subtle and nothing compares ServiceToken with == or !=.
func TestServiceTokenComparedInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	require.NoError(t, err)
	constantTime := false
	for _, pkg := range pkgs {
		for name, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BinaryExpr:
					if lit, ok := n.Y.(*ast.BasicLit); ok && lit.Value == `""` {
						return true // "is a token configured?" reveals nothing
					}
					if n.Op == token.EQL || n.Op == token.NEQ {
						for _, side := range []ast.Expr{n.X, n.Y} {
							if sel, ok := side.(*ast.SelectorExpr); ok && sel.Sel.Name == "ServiceToken" {
								t.Errorf("%s: %s compares the service token with %s: use subtle.ConstantTimeCompare", name, fset.Position(n.Pos()), n.Op)
							}
						}
					}
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "ConstantTimeCompare" {
						for _, a := range n.Args {
							if strings.Contains(exprString(a), "ServiceToken") {
								constantTime = true
							}
						}
					}
				}
				return true
			})
		}
	}
	assert.True(t, constantTime, "the service token is checked with subtle.ConstantTimeCompare")
}

func exprString(e ast.Expr) string {
	var b strings.Builder
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			b.WriteString(id.Name + ".")
		}
		return true
	})
	return b.String()
}
