//go:build !unix

package main

import "os"

// allocatedBytes falls back to the apparent size where block counts are unknown.
func allocatedBytes(fi os.FileInfo) int64 { return fi.Size() }
