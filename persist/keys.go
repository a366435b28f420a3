package persist

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// Key encodings. Every integer is big-endian so bbolt's byte order is
// numeric order.

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

// flowPrefix is the prefix of a flow's keys in the flows index: the id's
// length, then the id. The length keeps one id from being a prefix of
// another's keys whatever bytes ids contain.
func flowPrefix(flow string) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(flow)+8), uint16(len(flow)))
	return append(b, flow...)
}

// flowKey is a flows-index key: the flow's prefix, then its FlowSeq.
func flowKey(flow string, flowSeq uint64) []byte {
	return binary.BigEndian.AppendUint64(flowPrefix(flow), flowSeq)
}

// endedKey is an ended-index key: the end time (seconds offset so that
// negative times sort first, then nanoseconds), then the flow id.
func endedKey(t time.Time, flow string) []byte {
	b := endedTime(t)
	return append(b, flow...)
}

func endedTime(t time.Time) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12+64), uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

const endedTimeLen = 12

// head is a flow's entry in the heads bucket: its last FlowSeq and, once
// it became terminal, when.
type head struct {
	last  uint64
	ended []byte // endedTime of the first terminal record, or nil
}

func (h head) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+endedTimeLen), h.last)
	return append(b, h.ended...)
}

func decodeHead(v []byte) (head, bool) {
	switch len(v) {
	case 8:
		return head{last: binary.BigEndian.Uint64(v)}, true
	case 8 + endedTimeLen:
		return head{last: binary.BigEndian.Uint64(v), ended: append([]byte{}, v[8:]...)}, true
	}
	return head{}, false
}

// peekFlow gets the flow id out of an undecodable record when it can, so
// the error names the flow.
func peekFlow(v []byte) string {
	var r struct {
		Flow string `json:"flow"`
	}
	if json.Unmarshal(v, &r) != nil {
		return "?"
	}
	return r.Flow
}
