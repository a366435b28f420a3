// Package docs carries the documents flowd prints itself, so that someone
// who only ran `go install` has the reference without a checkout:
// `flowd -help-config` prints ConfigReference and ConfigExample.
package docs

import _ "embed"

// ConfigReference is docs/config.md, every setting and its default.
//
//go:embed config.md
var ConfigReference string

// ConfigExample is docs/flowd.example.toml, a commented config file.
//
//go:embed flowd.example.toml
var ConfigExample string
