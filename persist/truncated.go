package persist

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's meta page, as far as checkTruncated reads it: a 16-byte page
// header, then magic, version, page size, flags, root bucket (16 bytes),
// freelist page, high-water page id, txid and an FNV-64a checksum of the
// fields before it. Integers are in the machine's byte order.
const (
	metaOffset     = 16
	metaMagic      = 0xED0CDAED
	metaPageSize   = 8
	metaPgid       = 40
	metaTxid       = 48
	metaChecksum   = 56
	metaReadLength = metaOffset + metaChecksum + 8
)

// checkTruncated refuses a database file shorter than its own meta page
// says. bbolt maps the missing pages anyway, and the first read of one
// raises SIGBUS, which kills the process (and a panic inside bbolt.Open
// would leave the file locked). Files whose meta pages do not check out
// are left to bbolt to diagnose.
func checkTruncated(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt reports it, or creates the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	read := func(off int64) (pageSize, pgid, txid uint64, ok bool) {
		b := make([]byte, metaReadLength)
		if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
			return 0, 0, 0, false
		}
		m := b[metaOffset:]
		ne := binary.NativeEndian
		if ne.Uint32(m) != metaMagic {
			return 0, 0, 0, false
		}
		h := fnv.New64a()
		h.Write(m[:metaChecksum])
		if h.Sum64() != ne.Uint64(m[metaChecksum:]) {
			return 0, 0, 0, false
		}
		return uint64(ne.Uint32(m[metaPageSize:])), ne.Uint64(m[metaPgid:]), ne.Uint64(m[metaTxid:]), true
	}
	ps0, pgid0, tx0, ok0 := read(0)
	second := int64(os.Getpagesize())
	if ok0 {
		second = int64(ps0)
	}
	ps1, pgid1, tx1, ok1 := read(second)
	var pageSize, pgid uint64
	switch {
	case ok0 && (!ok1 || tx0 >= tx1):
		pageSize, pgid = ps0, pgid0
	case ok1:
		pageSize, pgid = ps1, pgid1
	default:
		return nil
	}
	if want := pageSize * pgid; want > 0 && uint64(fi.Size()) < want {
		return fmt.Errorf("open event log %s: %w: the file is %d bytes but its pages need %d: it was truncated (a full disk, an interrupted copy?): keep a copy for a bug report, then restore a backup or move it aside to start empty",
			path, ErrCorrupt, fi.Size(), want)
	}
	return nil
}
