package persist

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/flowdhq/flowd/states"
)

// How a record is stored in the events bucket. The record is its JSON
// (states.Record.Encode) less what the key and the flow's number already
// say: the seq is the key, and only a flow's first record keeps the flow id
// (43 bytes of a 270-byte record); later ones name their flow by the
// distance back to its first record. Reading puts the JSON back together
// exactly, so a record reads as it was encoded. A value that starts with
// '{' is a whole record's JSON, read as such: the form an append falls back
// to if Encode ever stops starting with version, seq and flow.
const (
	formFirst = 0x01 // uvarint(version) ‖ uvarint(len(flow)) ‖ flow ‖ rest
	formNext  = 0x02 // uvarint(version) ‖ uvarint(seq - flow number) ‖ rest
	formJSON  = '{'  // the whole JSON
)

// rest is the JSON after `{"v":V,"seq":S,"flow":"F",`: `"flow_seq":...}`.

// encodedRecord is a record encoded before the write transaction, which
// gives its seq: encoding is the larger part of an append's work, and
// everything inside the transaction delays the whole group commit.
type encodedRecord struct {
	version uint64
	flow    string
	rest    []byte
	// The fallback, whole JSON: before ‖ seq in decimal ‖ after.
	before, after []byte
}

// encodeRecord encodes r, whose Version is set.
func encodeRecord(r states.Record) (encodedRecord, error) {
	r.Seq = 0
	b, err := r.Encode()
	if err != nil {
		return encodedRecord{}, err
	}
	head, err := recordHead(uint64(r.Version), 0, r.Flow)
	if err != nil {
		return encodedRecord{}, err
	}
	if r.Version > 0 && bytes.HasPrefix(b, head) {
		return encodedRecord{version: uint64(r.Version), flow: r.Flow, rest: b[len(head):]}, nil
	}
	// Not the expected field order: store the whole JSON, seq spliced in.
	seqAt := bytes.Index(b, []byte(`,"seq":0,`))
	if seqAt < 0 {
		return encodedRecord{}, fmt.Errorf("encode record of flow %s: no seq field in %.40q", states.ShortID(r.Flow), b)
	}
	seqAt += len(`,"seq":`)
	return encodedRecord{before: b[:seqAt], after: b[seqAt+1:]}, nil
}

// recordHead is the start of a record's JSON that the compact forms leave out.
func recordHead(version, seq uint64, flow string) ([]byte, error) {
	id, err := quoteFlow(flow) // as Encode writes it
	if err != nil {
		return nil, fmt.Errorf("encode flow id: %w", err)
	}
	b := append(make([]byte, 0, 32+len(id)), `{"v":`...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"flow":`...)
	b = append(b, id...)
	return append(b, ','), nil
}

// quoteFlow returns a flow id as JSON. Ids are URL-safe base64, which
// JSON writes as it is: quoting them directly spares every append and
// every read a call into encoding/json.
func quoteFlow(flow string) ([]byte, error) {
	for i := 0; i < len(flow); i++ {
		c := flow[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return json.Marshal(flow)
		}
	}
	b := make([]byte, 0, len(flow)+2)
	b = append(b, '"')
	b = append(b, flow...)
	return append(b, '"'), nil
}

// stored returns the value to store for the record given seq, in the flow
// numbered num.
func (e encodedRecord) stored(seq, num uint64) []byte {
	if e.rest == nil {
		b := make([]byte, 0, len(e.before)+20+len(e.after))
		b = append(b, e.before...)
		b = strconv.AppendUint(b, seq, 10)
		return append(b, e.after...)
	}
	b := make([]byte, 1, 1+3*binary.MaxVarintLen64+len(e.flow)+len(e.rest))
	b = binary.AppendUvarint(b, e.version)
	if seq == num {
		b[0] = formFirst
		b = binary.AppendUvarint(b, uint64(len(e.flow)))
		b = append(b, e.flow...)
	} else {
		b[0] = formNext
		b = binary.AppendUvarint(b, seq-num)
	}
	return append(b, e.rest...)
}

// storedRecord is a stored value taken apart, without decoding its JSON.
type storedRecord struct {
	form    byte
	version uint64
	flow    string // formFirst
	num     uint64 // the flow's number: formFirst and formNext
	rest    []byte // formFirst and formNext; the whole JSON for formJSON
}

func parseStored(seq uint64, v []byte) (storedRecord, error) {
	if len(v) == 0 {
		return storedRecord{}, fmt.Errorf("%w: empty value", states.ErrUndecodable)
	}
	s := storedRecord{form: v[0]}
	if s.form == formJSON {
		s.rest = v
		return s, nil
	}
	if s.form != formFirst && s.form != formNext {
		return s, fmt.Errorf("%w: unknown stored form %#x", states.ErrUndecodable, s.form)
	}
	p := v[1:]
	next := func(what string) (uint64, error) {
		n, k := binary.Uvarint(p)
		if k <= 0 {
			return 0, fmt.Errorf("%w: bad %s in its stored form", states.ErrUndecodable, what)
		}
		p = p[k:]
		return n, nil
	}
	var err error
	if s.version, err = next("version"); err != nil {
		return s, err
	}
	if s.form == formFirst {
		n, err := next("flow id length")
		if err != nil {
			return s, err
		}
		if n == 0 || n > uint64(len(p)) || n > maxFlowID {
			return s, fmt.Errorf("%w: flow id of %d bytes in its stored form", states.ErrUndecodable, n)
		}
		s.flow, s.num, p = string(p[:n]), seq, p[n:]
	} else {
		d, err := next("distance to its flow's first record")
		if err != nil {
			return s, err
		}
		if d == 0 || d >= seq {
			return s, fmt.Errorf("%w: its flow's first record is %d records back from seq %d", states.ErrUndecodable, d, seq)
		}
		s.num = seq - d
	}
	s.rest = p
	return s, nil
}

// firstFlow says which flow a stored record starts, if it is a flow's
// first record (or whole JSON that names its flow): "" otherwise.
func firstFlow(seq uint64, v []byte) string {
	s, err := parseStored(seq, v)
	switch {
	case err != nil:
		return ""
	case s.form == formFirst:
		return s.flow
	case s.form == formJSON:
		return peekFlow(v)
	}
	return ""
}

// recordCheck is what an index says of a record, for decodeRecord to check.
type recordCheck struct {
	flow    string // the flow's id, or "" when unknown
	num     uint64 // the flow's number, or 0
	flowSeq uint64 // the record's FlowSeq, or 0
}

// decodeRecord decodes the record stored under seqKey, checking it is the
// one the index said. flowOf gives the id of the flow numbered num, for a
// record that names its flow by number when check.flow does not. Errors
// name the record.
func decodeRecord(seqKey, v []byte, check recordCheck, flowOf func(num uint64) (string, error)) (states.Record, error) {
	seq := decodeSeq(seqKey)
	flow := check.flow
	fail := func(err error) (states.Record, error) {
		if flow == "" {
			flow = peekFlow(v)
		}
		return states.Record{}, &states.RecordError{Seq: seq, Flow: flow, FlowSeq: check.flowSeq, Err: err}
	}
	s, err := parseStored(seq, v)
	if err != nil {
		return fail(err)
	}
	js := s.rest
	if s.form != formJSON {
		if check.num != 0 && s.num != check.num {
			return fail(fmt.Errorf("%w: stored as a record of the flow numbered %d, indexed under the flow numbered %d", ErrCorrupt, s.num, check.num))
		}
		switch {
		case s.form == formFirst && flow != "" && s.flow != flow:
			return fail(fmt.Errorf("%w: indexed under flow %s but says flow %s", ErrCorrupt, states.ShortID(flow), states.ShortID(s.flow)))
		case s.form == formFirst:
			flow = s.flow
		case flow == "":
			if flow, err = flowOf(s.num); err != nil {
				flow = "?"
				return fail(err)
			}
		}
		head, err := recordHead(s.version, seq, flow)
		if err != nil {
			return fail(err)
		}
		js = append(head, s.rest...)
	}
	rec, err := states.Decode(js)
	if err != nil {
		return fail(err)
	}
	switch {
	case rec.Seq != seq:
		err = fmt.Errorf("%w: stored under seq %d but says seq %d", ErrCorrupt, seq, rec.Seq)
	case flow != "" && rec.Flow != flow:
		err = fmt.Errorf("%w: indexed under flow %s but says flow %s", ErrCorrupt, states.ShortID(flow), states.ShortID(rec.Flow))
	case check.flowSeq != 0 && rec.FlowSeq != check.flowSeq:
		err = fmt.Errorf("%w: indexed as flow_seq %d but says %d", ErrCorrupt, check.flowSeq, rec.FlowSeq)
	case s.form == formFirst && rec.FlowSeq != 1:
		err = fmt.Errorf("%w: stored as its flow's first record but says flow_seq %d", ErrCorrupt, rec.FlowSeq)
	}
	if err != nil {
		return rec, &states.RecordError{Seq: seq, Flow: rec.Flow, FlowSeq: rec.FlowSeq, Err: err}
	}
	return rec, nil
}

// peekFlow gets the flow id out of an undecodable JSON record when it can,
// so the error names the flow.
func peekFlow(v []byte) string {
	var r struct {
		Flow string `json:"flow"`
	}
	if json.Unmarshal(v, &r) != nil {
		return "?"
	}
	return r.Flow
}
