package persist

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// compactTxSize bounds each transaction of a compaction, so compacting a
// large log does not hold it all in memory.
const compactTxSize = 64 << 20

// Compact copies the event log at src into a new file dst, leaving out the
// free pages that pruning left behind: a bbolt file never shrinks by
// itself. It copies src's key file (src + ".key") to dst + ".key" too, so
// dst opens with its secrets.
//
// Run it while flowd is stopped: it fails with ErrLocked if a flowd holds
// src. dst must not exist. Afterwards, move dst (and its key file) over src.
func Compact(src, dst string) (err error) {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("compact %s: %s already exists: remove it or choose another destination", src, dst)
	}
	in, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: DefaultTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("compact %s: %w", src, ErrLocked)
	case err != nil:
		return fmt.Errorf("compact %s: open: %w", src, err)
	}
	defer in.Close()
	if err := in.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return ErrNotLog
		}
		return checkFormat(meta.Get(metaFormat))
	}); err != nil {
		return fmt.Errorf("compact %s: %w", src, err)
	}

	srcKey, dstKey := src+".key", dst+".key"
	if _, err := os.Stat(dstKey); err == nil {
		return fmt.Errorf("compact %s: %s already exists: remove it or choose another destination", src, dstKey)
	}
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		return fmt.Errorf("compact %s: create %s: %w", src, dst, err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("compact %s: close %s: %w", src, dst, cerr)
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	if err := bolt.Compact(out, in, compactTxSize); err != nil {
		return fmt.Errorf("compact %s into %s: %w", src, dst, err)
	}
	if err := copyKey(srcKey, dstKey); err != nil {
		return fmt.Errorf("compact %s: %w", src, err)
	}
	return nil
}

// copyKey copies a key file, mode 0600, if there is one.
func copyKey(src, dst string) error {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy key file: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy key file: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copy key file to %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copy key file to %s: %w", dst, err)
	}
	return out.Close()
}
