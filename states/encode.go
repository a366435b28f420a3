package states

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends r's JSON exactly as encoding/json.Marshal writes it,
// without reflection: encoding a record is the larger part of a durable
// append's CPU, and every transition pays it. It reports false, having
// written a partial result, for anything it does not write byte for byte
// as encoding/json does (a string that needs escaping, a time
// MarshalJSON would refuse); Encode then falls back to json.Marshal.
// TestEncodeMatchesJSON holds it to json.Marshal, field by field.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	ok := true
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(r.Version), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"flow":`...)
	b, ok = appendString(b, r.Flow, ok)
	b = append(b, `,"flow_seq":`...)
	b = strconv.AppendUint(b, r.FlowSeq, 10)
	b = append(b, `,"event":`...)
	b, ok = appendString(b, string(r.Event), ok)
	b = append(b, `,"from":`...)
	b, ok = appendString(b, string(r.From), ok)
	b = append(b, `,"to":`...)
	b, ok = appendString(b, string(r.To), ok)
	b = append(b, `,"time":`...)
	b, ok = appendTime(b, r.Time, ok)
	if !r.Data.IsZero() {
		b = append(b, `,"data":`...)
		b, ok = appendData(b, &r.Data, ok)
	}
	return append(b, '}'), ok
}

// IsZero reports whether d has nothing to write: every field is empty as
// its omitempty tag sees it (an empty slice counts as empty). The omitzero
// of Record.Data calls it, so data is left out exactly when it would be
// written as {}. (Without it, omitzero's own test kept a non-nil empty
// slice as data, written "data":{}, which decoded back to no data: a
// record that changed on its second encoding. Found by FuzzDecode.)
func (d Data) IsZero() bool {
	return d.Provider == "" && d.Account == "" && len(d.Scopes) == 0 && d.Transport == "" &&
		d.RedirectURI == "" && d.Deadline == nil && d.Issuer == "" && !d.IssuerRequired && d.NonceFingerprint == "" &&
		(d.MCPDiscovery == nil || d.MCPDiscovery.isZero()) &&
		d.Reason == "" && d.Message == "" &&
		d.ErrorCode == "" && d.HTTPStatus == 0 && len(d.GrantedScopes) == 0 && !d.TokenStored &&
		d.Subject == "" && d.Email == "" &&
		d.SupersededBy == "" && d.CodeFingerprint == "" && d.Ignored == "" && d.BindingFingerprint == "" &&
		(d.TokenEvents == nil || *d.TokenEvents == TokenEvents{}) &&
		(d.DevicePolling == nil || *d.DevicePolling == DevicePolling{})
}

// appendData writes Data's fields in declaration order, each left out
// when empty (omitempty), an embedded group's fields in its place, as
// encoding/json flattens them (none of a nil group's).
func appendData(b []byte, d *Data, ok bool) ([]byte, bool) {
	w := fieldWriter{b: append(b, '{'), ok: ok, first: true}
	w.str("provider", d.Provider)
	w.str("account", d.Account)
	w.list("scopes", d.Scopes)
	w.str("transport", string(d.Transport))
	w.str("redirect_uri", d.RedirectURI)
	w.timestamp("deadline", d.Deadline)
	w.str("issuer", d.Issuer)
	w.flag("issuer_required", d.IssuerRequired)
	w.str("nonce_fp", d.NonceFingerprint)
	if m := d.MCPDiscovery; m != nil {
		w.str("resource", m.Resource)
		w.str("resource_metadata", m.ResourceMetadataURL)
		w.str("server_metadata", m.ServerMetadataURL)
		w.str("registration", m.Registration)
		w.str("client_id", m.ClientID)
		w.str("token_auth", m.TokenAuth)
		w.str("scope_source", m.ScopeSource)
		w.list("discovery", m.Discovery)
	}
	w.str("reason", string(d.Reason))
	w.str("message", d.Message)
	w.str("error_code", d.ErrorCode)
	w.int("http_status", int64(d.HTTPStatus))
	w.list("granted_scopes", d.GrantedScopes)
	w.flag("token_stored", d.TokenStored)
	w.str("subject", d.Subject)
	w.str("email", d.Email)
	w.str("superseded_by", d.SupersededBy)
	w.str("code_fp", d.CodeFingerprint)
	w.str("ignored", string(d.Ignored))
	if p := d.DevicePolling; p != nil {
		w.str("verification_uri", p.VerificationURI)
		w.int("poll_interval", int64(p.PollInterval))
		w.timestamp("next_poll", p.NextPoll)
	}
	w.str("binding_fp", d.BindingFingerprint)
	if t := d.TokenEvents; t != nil {
		w.timestamp("token_expiry", t.TokenExpiry)
		w.str("refresh_fp", t.RefreshFP)
		w.flag("rotated", t.Rotated)
		w.flag("transient", t.Transient)
		w.str("revocation", string(t.Revocation))
	}
	return append(w.b, '}'), w.ok
}

// fieldWriter writes an object's fields, commas between them.
type fieldWriter struct {
	b     []byte
	ok    bool
	first bool
}

func (w *fieldWriter) key(name string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, `":`...)
}

func (w *fieldWriter) str(name, v string) {
	if v != "" {
		w.key(name)
		w.b, w.ok = appendString(w.b, v, w.ok)
	}
}

func (w *fieldWriter) timestamp(name string, v *time.Time) {
	if v != nil {
		w.key(name)
		w.b, w.ok = appendTime(w.b, *v, w.ok)
	}
}

// flag writes true; false is left out, as omitempty does.
func (w *fieldWriter) flag(name string, v bool) {
	if v {
		w.key(name)
		w.b = append(w.b, "true"...)
	}
}

func (w *fieldWriter) int(name string, v int64) {
	if v != 0 {
		w.key(name)
		w.b = strconv.AppendInt(w.b, v, 10)
	}
}

func (w *fieldWriter) list(name string, v []string) {
	if len(v) == 0 {
		return
	}
	w.key(name)
	w.b = append(w.b, '[')
	for i, s := range v {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b, w.ok = appendString(w.b, s, w.ok)
	}
	w.b = append(w.b, ']')
}

// appendString quotes s when no byte of it needs escaping (printable
// ASCII other than the quote, the backslash and the three characters
// encoding/json escapes for HTML, or well-formed UTF-8 other than U+2028
// and U+2029); otherwise it reports false.
func appendString(b []byte, s string, ok bool) ([]byte, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return b, false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
			return b, false
		}
		i += n
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), ok
}

// appendTime writes t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds, quoted), or reports false where MarshalJSON fails.
func appendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return b, false
	}
	return append(b, '"'), ok
}
