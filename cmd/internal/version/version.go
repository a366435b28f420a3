// Package version says which flowd and flowctl a user runs, for -version,
// --version and bug reports.
//
// A binary from `go install module@v1.2.3` carries its module version; one
// built from a checkout (`go install ./cmd/flowd`) carries only "(devel)"
// as its module version, which tells a bug report nothing, so the commit
// Go stamps into the build info (vcs.revision, vcs.modified) is used then.
package version

import (
	"runtime/debug"
)

// Override, when set at build time with
// -ldflags "-X github.com/flowdhq/flowd/cmd/internal/version.Override=v1.2.3",
// wins over the build info (release builds).
var Override = ""

// String is the version of the running binary: Override, else the module
// version, else the commit it was built from ("1a2b3c4d5e6f", with
// "-modified" when the work tree had uncommitted changes), else "unknown".
func String() string {
	if Override != "" {
		return Override
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo is String for the given build info.
func FromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		// Built without VCS information (-buildvcs=false, or outside a
		// checkout): say so rather than print "(devel)".
		return "unknown (built without version control information)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-modified"
	}
	return rev
}
