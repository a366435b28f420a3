package persist

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Key and value encodings; docs/storage.md has the table. Every integer
// in a key is big-endian so bbolt's byte order is numeric order.

func encodeSeq(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func decodeSeq(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// maxFlowID bounds flow ids: state tokens are a few dozen bytes, and a
// bound keeps every index key far below bbolt's key size limit.
const maxFlowID = 1024

// A flow's number is the seq of its first record: unique, never reused,
// and in creation order. The per-flow indexes (heads, live, ended) are
// keyed by it rather than by the random flow id, so a new flow's entries
// land at the tail of their trees and a commit dirties a few tail pages
// instead of one random page per index.

// endedKey is an ended-index key: the end time (seconds offset so that
// negative times sort first, then nanoseconds), then the flow's number.
func endedKey(t time.Time, num uint64) []byte {
	return binary.BigEndian.AppendUint64(endedTime(t), num)
}

func endedTime(t time.Time) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, endedTimeLen+8), uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

const (
	endedTimeLen = 12
	endedKeyLen  = endedTimeLen + 8
)

// head is a flow's entry in the heads bucket, under its number: the seqs
// of its records in FlowSeq order (so its last FlowSeq is their count:
// FlowSeqs are contiguous from 1), and whether its end is in the ended
// index. Holding the seqs here makes History one Get per record, with no
// per-record index entry.
type head struct {
	seqs  []uint64
	ended bool
}

const headEnded = 1 << 0 // head flags

// encode: flags (1 byte), then the number of records and each seq after
// the first as its distance from the one before, all uvarints. The first
// seq is the key. Seqs grow within a flow, so distances are small: a
// four-record flow's head is about 6 bytes.
func (h head) encode() []byte {
	b := make([]byte, 1, 1+binary.MaxVarintLen64*len(h.seqs))
	if h.ended {
		b[0] |= headEnded
	}
	b = binary.AppendUvarint(b, uint64(len(h.seqs)))
	for i := 1; i < len(h.seqs); i++ {
		b = binary.AppendUvarint(b, h.seqs[i]-h.seqs[i-1])
	}
	return b
}

// decodeHead decodes the head stored under num.
func decodeHead(num uint64, v []byte) (head, error) {
	bad := func(why string) (head, error) {
		return head{}, fmt.Errorf("%w: head of flow number %d: %s", ErrCorrupt, num, why)
	}
	if len(v) < 2 || v[0]&^headEnded != 0 {
		return bad(fmt.Sprintf("%d bytes starting %x", len(v), v[:min(len(v), 2)]))
	}
	h := head{ended: v[0]&headEnded != 0}
	n, k := binary.Uvarint(v[1:])
	// Every record after the first takes at least one byte.
	if k <= 0 || n == 0 || n-1 > uint64(len(v)-1-k) {
		return bad("bad record count")
	}
	h.seqs = make([]uint64, 1, n)
	h.seqs[0] = num
	rest := v[1+k:]
	for i := uint64(1); i < n; i++ {
		d, k := binary.Uvarint(rest)
		if k <= 0 || d == 0 {
			return bad(fmt.Sprintf("bad seq distance of record %d", i+1))
		}
		h.seqs = append(h.seqs, h.seqs[i-1]+d)
		rest = rest[k:]
	}
	if len(rest) != 0 {
		return bad(fmt.Sprintf("%d bytes after the seqs", len(rest)))
	}
	return h, nil
}

// last is the flow's last FlowSeq, 0 for a new flow.
func (h head) last() uint64 { return uint64(len(h.seqs)) }

// A secret is stored under a secret number (the secrets bucket's own
// sequence, given when its name is first written) as uvarint(len(name)) ‖
// name ‖ sealed value. Secrets written with a flow's first records (its
// PKCE verifier) thus sort by creation too, and are deleted near the tail
// when the flow ends; names are found through an index in memory (see
// secretIndex), rebuilt at open from this bucket.
func encodeSecret(name string, sealed []byte) []byte {
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen16+len(name)+len(sealed)), uint64(len(name)))
	b = append(b, name...)
	return append(b, sealed...)
}

func decodeSecret(v []byte) (name string, sealed []byte, ok bool) {
	n, k := binary.Uvarint(v)
	if k <= 0 || n == 0 || n > uint64(len(v)-k) {
		return "", nil, false
	}
	return string(v[k : k+int(n)]), v[k+int(n):], true
}
