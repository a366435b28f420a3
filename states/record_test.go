package states

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullRecord sets every field of a record, so a round trip that drops one
// shows.
func fullRecord() Record {
	dl := t0.Add(5 * time.Minute)
	return Record{
		Version: SchemaVersion, Seq: 42, Flow: testFlow, FlowSeq: 7, Event: Failed,
		From: AwaitingCallback, To: Error, Time: t0.Add(1500 * time.Millisecond),
		Data: Data{
			Provider: "github", Account: "alice", Scopes: []string{"repo", "read:user"},
			NonceFingerprint: "hmac:5d1f0c2a9b8e7d6c5b4a3f2e", Subject: "583231", Email: "alice@example.com",
			Transport: Gateway, RedirectURI: "https://flowd.example.com/oauth/callback", Deadline: &dl,
			Reason: ExchangeFailed, Message: "code expired", ErrorCode: "invalid_grant", HTTPStatus: 400,
			GrantedScopes: []string{"repo"}, TokenStored: true, SupersededBy: "bmV3ZXJGbG93MDAwMDAwMDAy",
			CodeFingerprint: "fp1:3f9a1c27d0b4e865", Ignored: IgnoredFinished,
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	recs := append(happy(testFlow, 1, t0), fullRecord())
	recs = append(recs, Record{Version: SchemaVersion, Seq: 9, Flow: testFlow, FlowSeq: 2, Event: URLIssued,
		From: Pending, To: AwaitingCallback, Time: t0})
	for _, r := range recs {
		t.Run(fmt.Sprintf("%d-%s", r.Seq, r.Event), func(t *testing.T) {
			b, err := r.Encode()
			require.NoError(t, err)
			assert.NotContains(t, string(b), "\n", "one record is one line of an export")
			got, err := Decode(b)
			require.NoError(t, err)
			assert.Equal(t, r, got)
			again, err := got.Encode()
			require.NoError(t, err)
			assert.Equal(t, string(b), string(again), "encoding is stable")
		})
	}
}

func TestEncodeFillsVersion(t *testing.T) {
	r := fullRecord()
	r.Version = 0
	b, err := r.Encode()
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(b, []byte(fmt.Sprintf(`{"v":%d,`, SchemaVersion))), "%s", b)
	got, err := Decode(b)
	require.NoError(t, err)
	assert.Equal(t, SchemaVersion, got.Version)
}

// The stored names are the documented schema (docs/record-format.md):
// renaming a Go field must not silently rename a stored one.
func TestEncodeFieldNames(t *testing.T) {
	b, err := fullRecord().Encode()
	require.NoError(t, err)
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &top))
	assert.ElementsMatch(t, []string{"v", "seq", "flow", "flow_seq", "event", "from", "to", "time", "data"}, keys(top))
	var data map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(top["data"], &data))
	assert.ElementsMatch(t, []string{"provider", "account", "scopes", "transport", "redirect_uri", "deadline",
		"nonce_fp", "reason", "message", "error_code", "http_status", "granted_scopes", "token_stored",
		"subject", "email", "superseded_by", "code_fp", "ignored"}, keys(data))

	// Empty data and the new pseudo-state stay compact.
	b, err = Record{Version: SchemaVersion, Seq: 1, Flow: "f", FlowSeq: 2, Event: URLIssued, From: Pending, To: AwaitingCallback, Time: t0}.Encode()
	require.NoError(t, err)
	assert.Equal(t, `{"v":2,"seq":1,"flow":"f","flow_seq":2,"event":"url_issued","from":"pending","to":"awaiting_callback","time":"2026-03-01T10:00:00Z"}`, string(b))
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDecodeRefuses(t *testing.T) {
	good, err := fullRecord().Encode()
	require.NoError(t, err)
	withV := func(v string) string { return strings.Replace(string(good), `"v":2`, `"v":`+v, 1) }

	cases := []struct {
		name, in string
		want     error
		says     string
	}{
		{"missing version", strings.Replace(string(good), `"v":2,`, "", 1), ErrUnsupportedVersion, `no schema version`},
		{"null version", withV("null"), ErrUnsupportedVersion, `no schema version`},
		{"version zero", withV("0"), ErrUnsupportedVersion, "version 0"},
		{"negative version", withV("-3"), ErrUnsupportedVersion, "version -3"},
		{"newer version", withV(fmt.Sprint(SchemaVersion + 1)), ErrUnsupportedVersion, "upgrade flowd"},
		{"version as string", withV(`"1"`), ErrUndecodable, ""},
		{"version as float", withV(`1.5`), ErrUndecodable, ""},
		{"unknown top-level field", strings.Replace(string(good), `"v":2,`, `"v":2,"code":"abc",`, 1), ErrUndecodable, `unknown field "code"`},
		{"unknown data field", strings.Replace(string(good), `"data":{`, `"data":{"verifier":"x",`, 1), ErrUndecodable, `unknown field "verifier"`},
		{"trailing record", string(good) + string(good), ErrUndecodable, ""},
		{"trailing garbage", string(good) + "x", ErrUndecodable, ""},
		{"truncated", string(good[:len(good)/2]), ErrUndecodable, ""},
		{"garbage", "hello, world", ErrUndecodable, ""},
		{"empty", "", ErrUndecodable, ""},
		{"array", "[1,2]", ErrUndecodable, ""},
		{"wrong field type", strings.Replace(string(good), `"seq":42`, `"seq":"42"`, 1), ErrUndecodable, ""},
		{"bad time", strings.Replace(string(good), `"time":"2026-03-01T10:00:01.5Z"`, `"time":"yesterday"`, 1), ErrUndecodable, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.NotEqual(t, string(good), c.in, "the case must change the record")
			r, err := Decode([]byte(c.in))
			requireOnly(t, err, c.want)
			assert.Contains(t, err.Error(), c.says)
			assert.Equal(t, Record{}, r, "a record is never half-read")
		})
	}
}

// Whitespace around a record (a CRLF export, a pretty-printed line) is not
// an error.
func TestDecodeToleratesSpace(t *testing.T) {
	good, err := fullRecord().Encode()
	require.NoError(t, err)
	got, err := Decode(append(append([]byte("  "), good...), "\r\n"...))
	require.NoError(t, err)
	assert.Equal(t, fullRecord(), got)
}

// Every version this code accepts below SchemaVersion needs an upcaster:
// bumping SchemaVersion without one would make old logs undecodable.
func TestUpcastersCoverEveryOldVersion(t *testing.T) {
	for v := 1; v < SchemaVersion; v++ {
		assert.NotNil(t, upcasters[v], "no upcaster from version %d to %d", v, v+1)
	}
	for v := range upcasters {
		assert.True(t, v >= 1 && v < SchemaVersion, "upcaster for version %d is never used", v)
	}
}

// The upcaster chain, run with a pretend upcaster: a version-1 record that called the provider "provider" is read by a
// version-2 decoder after the upcaster renames the field; a missing,
// failing or forgetful upcaster is an error, never a panic.
func TestDecodeRunsUpcasters(t *testing.T) {
	v1 := []byte(`{"v":1,"seq":1,"flow":"f","flow_seq":1,"event":"created","from":"","to":"pending","time":"2026-03-01T10:00:00Z","data":{"idp":"github"}}`)
	rename := func(b []byte) ([]byte, error) {
		b = bytes.Replace(b, []byte(`"v":1`), []byte(`"v":2`), 1)
		return bytes.Replace(b, []byte(`"idp"`), []byte(`"provider"`), 1), nil
	}
	r, err := decode(v1, 2, map[int]func([]byte) ([]byte, error){1: rename})
	require.NoError(t, err)
	assert.Equal(t, 2, r.Version)
	assert.Equal(t, "github", r.Data.Provider)

	v2 := []byte(strings.Replace(string(v1), `"v":1`, `"v":2`, 1))
	v2 = bytes.Replace(v2, []byte(`"idp"`), []byte(`"provider"`), 1)
	r, err = decode(v2, 2, map[int]func([]byte) ([]byte, error){1: rename})
	require.NoError(t, err, "a current record skips the upcasters")
	assert.Equal(t, "github", r.Data.Provider)

	_, err = decode(v1, 2, nil)
	requireOnly(t, err, ErrUnsupportedVersion)
	assert.Contains(t, err.Error(), "no upgrade")

	_, err = decode(v1, 2, map[int]func([]byte) ([]byte, error){1: func([]byte) ([]byte, error) { return nil, fmt.Errorf("boom") }})
	requireOnly(t, err, ErrUndecodable)
	assert.Contains(t, err.Error(), "upgrading from version 1: boom")

	forgetful := func(b []byte) ([]byte, error) { return bytes.Replace(b, []byte(`"idp"`), []byte(`"provider"`), 1), nil }
	_, err = decode(v1, 2, map[int]func([]byte) ([]byte, error){1: forgetful})
	requireOnly(t, err, ErrUndecodable)
	assert.Contains(t, err.Error(), "gave version 1, want 2")

	_, err = decode(v1, 1, nil)
	assert.ErrorIs(t, err, ErrUndecodable, "without the upgrade the old field is unknown to the current decoder")
}

// Decode must never panic, and what it accepts must survive a round trip.
func FuzzDecode(f *testing.F) {
	good, _ := fullRecord().Encode()
	f.Add(good)
	for _, r := range happy(testFlow, 1, t0) {
		b, _ := r.Encode()
		f.Add(b)
	}
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{"v":1,"data":{"deadline":null}}`))
	f.Add([]byte(`{"v":1} {"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", b, err)
		}
		r2, err := Decode(enc)
		if err != nil {
			t.Fatalf("cannot decode own encoding %q: %v", enc, err)
		}
		enc2, _ := r2.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %q then %q", enc, enc2)
		}
	})
}

// A version 2 record written by this flowd is refused by a version 1
// reader with "upgrade flowd", not as damage; and every version 1 record
// reads as version 2 with only principal renamed.
func TestUpcastV1(t *testing.T) {
	v2, err := fullRecord().Encode()
	require.NoError(t, err)
	_, err = decode(v2, 1, nil)
	requireOnly(t, err, ErrUnsupportedVersion)
	assert.Contains(t, err.Error(), "upgrade flowd")

	v1 := []byte(`{"v":1,"seq":3,"flow":"f","flow_seq":1,"event":"created","from":"","to":"pending","time":"2026-03-01T10:00:00Z","data":{"provider":"github","principal":"alice","scopes":["repo"]}}`)
	r, err := Decode(v1)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Version)
	assert.Equal(t, Data{Provider: "github", Account: "alice", Scopes: []string{"repo"}}, r.Data)

	both := bytes.Replace(v1, []byte(`"principal":"alice"`), []byte(`"principal":"old","account":"alice"`), 1)
	r, err = Decode(both)
	require.NoError(t, err)
	assert.Equal(t, "alice", r.Data.Account, "account wins over the legacy name")

	noData := []byte(`{"v":1,"seq":4,"flow":"f","flow_seq":2,"event":"url_issued","from":"pending","to":"awaiting_callback","time":"2026-03-01T10:00:00Z"}`)
	r, err = Decode(noData)
	require.NoError(t, err)
	assert.Equal(t, URLIssued, r.Event)
}
