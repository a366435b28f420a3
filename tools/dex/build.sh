#!/bin/sh
# Builds the Dex OpenID Connect server that flowd's end-to-end tests run
# against, and prints the binary's path.
#
# Dex lives in this nested module (tools/dex) so that its many dependencies
# stay out of flowd's own go.mod. Its version is pinned in tools/dex/go.mod
# (tag v2.45.1 by pseudo-version: Dex's go.mod has a replace line, so
# `go install dex@version` is refused).
#
# Output: $FLOWD_DEX_BIN if set, else ${XDG_CACHE_HOME:-~/.cache}/flowd/bin/dex.
# A binary of the pinned Dex version is reused (the version Go stamped into
# it, read with `go version -m`, against tools/dex/go.mod): a cold build
# takes about three minutes on two cores. File times say nothing here: a
# fresh clone's go.mod is always newer than the cached binary. Pass -f to
# rebuild anyway.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
bin=${FLOWD_DEX_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/flowd/bin/dex}

force=0
if [ "${1:-}" = "-f" ]; then
	force=1
fi

pinned=$(awk '$1 == "github.com/dexidp/dex" { print $2; exit }' "$here/go.mod")
built=""
if [ -x "$bin" ]; then
	built=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/dexidp/dex" { print $3; exit }') || built=""
fi
if [ "$force" = 0 ] && [ -n "$pinned" ] && [ "$built" = "$pinned" ]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$(dirname -- "$bin")"
# Build into a temporary name and rename, so an interrupted build never
# leaves a truncated binary that a later run would take as up to date.
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "building dex into $bin (about 3 minutes cold)..." >&2
# GOWORK=off: this module is not in the repository's go.work (Dex's
# dependencies stay out of it), and inside the workspace Go would not find
# it.
(cd "$here" && GOWORK=off go build -o "$tmp" github.com/dexidp/dex/cmd/dex)
mv -f "$tmp" "$bin"
trap - EXIT
echo "$bin"
