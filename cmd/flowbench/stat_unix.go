//go:build unix

package main

import (
	"os"
	"syscall"
)

// allocatedBytes is what the disk holds for a file: a bbolt file grows by
// truncate, so its tail can be a hole that ls counts and the disk does not.
func allocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
