package states

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// Logs written before the encoder without reflection must read, compare
// and hash the same: Encode must write what json.Marshal writes, byte for
// byte, for every record.

func TestEncodeMatchesJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, weird := genRecord(t)
		stored := r
		if stored.Version == 0 {
			stored.Version = SchemaVersion // Encode writes the current version where none is set
		}
		want, wantErr := json.Marshal(stored)
		got, err := r.Encode()
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		if !weird {
			_, fast := appendRecord(nil, &stored)
			require.True(t, fast, "plain strings and a representable time take the encoder without reflection")
		}
	})
}

// TestEncodeEveryField sets each field of Record and of Data alone, through
// reflection, so a field added to either without teaching appendRecord
// fails here even if no generator knows of it. The fields of Data's
// embedded groups (MCPDiscovery, DevicePolling, TokenEvents) count as
// Data's, as encoding/json flattens them; each group is also tried
// present but empty, which writes none of its fields.
func TestEncodeEveryField(t *testing.T) {
	base := Record{Version: SchemaVersion, Flow: "f", FlowSeq: 1, Event: Created, To: Pending, Time: time.Unix(1, 0).UTC()}
	check := func(t *testing.T, r Record) {
		want, err := json.Marshal(r)
		require.NoError(t, err)
		got, err := r.Encode()
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got))
		_, fast := appendRecord(nil, &r)
		assert.True(t, fast, "a plain value of the field takes the encoder without reflection")
	}
	set := func(t *testing.T, name string, f reflect.Value) {
		switch f.Kind() {
		case reflect.String:
			f.SetString("x-1")
		case reflect.Int, reflect.Int64:
			f.SetInt(7)
		case reflect.Uint64:
			f.SetUint(9)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a", "b"}))
		case reflect.Pointer:
			f.Set(reflect.ValueOf(new(time.Unix(2, 5).UTC())))
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Unix(3, 0).UTC()))
		default:
			t.Fatalf("field %s of kind %s: teach appendRecord and this test", name, f.Kind())
		}
	}
	type leaf struct {
		name  string
		path  []int // in Record, or in Data when data
		group bool  // path[0] is an embedded group of Data, path[1] its field
		data  bool
	}
	var leaves []leaf
	rt, dt := reflect.TypeFor[Record](), reflect.TypeFor[Data]()
	for i := range rt.NumField() {
		if name := rt.Field(i).Name; name != "Data" && name != "Version" {
			leaves = append(leaves, leaf{name: "Record." + name, path: []int{i}})
		}
	}
	groups := 0
	for i := range dt.NumField() {
		sf := dt.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Pointer && sf.Type.Elem().Kind() == reflect.Struct {
			groups++
			gt := sf.Type.Elem()
			for j := range gt.NumField() {
				leaves = append(leaves, leaf{name: "Data." + gt.Name() + "." + gt.Field(j).Name, path: []int{i, j}, group: true, data: true})
			}
			t.Run("Data."+gt.Name()+".empty", func(t *testing.T) {
				r := base
				reflect.ValueOf(&r.Data).Elem().Field(i).Set(reflect.New(gt))
				assert.True(t, r.Data.IsZero(), "an empty group is no data")
				check(t, r)
			})
			continue
		}
		leaves = append(leaves, leaf{name: "Data." + sf.Name, path: []int{i}, data: true})
	}
	require.Equal(t, 3, groups, "Data embeds MCPDiscovery, DevicePolling and TokenEvents")
	for _, l := range leaves {
		t.Run(l.name, func(t *testing.T) {
			r := base
			target := reflect.ValueOf(&r).Elem()
			if l.data {
				target = reflect.ValueOf(&r.Data).Elem()
			}
			f := target.Field(l.path[0])
			if l.group {
				g := reflect.New(f.Type().Elem())
				f.Set(g)
				f = g.Elem().Field(l.path[1])
			}
			set(t, l.name, f)
			check(t, r)
			if f.Kind() == reflect.Slice {
				f.Set(reflect.MakeSlice(f.Type(), 0, 0)) // empty, not nil: data is written, the field is not
				check(t, r)
			}
		})
	}
}

// TestEncodeFallsBack: values the fast path does not write itself still
// encode as json.Marshal does, and a time it cannot represent fails alike.
func TestEncodeFallsBack(t *testing.T) {
	odd := []string{"<a&b>", "quote\"back\\slash", "tab\tnl\n", "\x00\x1f", "bad \xff utf8", "line\u2028sep\u2029", "é ü 日本 🙂", "\x7f"}
	for _, s := range odd {
		r := Record{Version: SchemaVersion, Flow: s, Event: Event(s), From: State(s), To: State(s), Time: time.Unix(0, 0).UTC(),
			Data: Data{Message: s, Scopes: []string{s}}}
		want, err := json.Marshal(r)
		require.NoError(t, err)
		got, err := r.Encode()
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "%q", s)
	}
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := Record{Version: SchemaVersion, Time: far}.Encode()
	assert.Error(t, err, "a year past 9999 is refused as json.Marshal refuses it")
	_, err = Record{Version: SchemaVersion, Data: Data{Deadline: &far}}.Encode()
	assert.Error(t, err)
}

// genString draws a plain string (one the encoder writes itself), and
// when weird is set maybe one it hands to encoding/json.
func genString(t *rapid.T, label string, weird bool) string {
	plain := rapid.OneOf(
		rapid.SampledFrom([]string{"", "github", "awaiting_callback", "hmac:0123456789abcdef01234567", "https://x.test/cb?a=1"}),
		rapid.StringMatching(`[ -!#-%'-;=?-\[\]-~]{0,40}`),
		rapid.StringMatching(`[a-zé日🙂]{0,10}`),
	)
	if !weird {
		return plain.Draw(t, label)
	}
	return rapid.OneOf(
		plain,
		rapid.SampledFrom([]string{"", "github", "awaiting_callback", "hmac:0123456789abcdef01234567", "https://x.test/cb?a=1&b=2"}),
		rapid.StringMatching(`[A-Za-z0-9_\-:/.]{0,40}`),
		rapid.String(),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) }),
	).Draw(t, label)
}

func genStrings(t *rapid.T, label string, weird bool) []string {
	switch rapid.IntRange(0, 2).Draw(t, label+"-kind") {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	n := rapid.IntRange(1, 3).Draw(t, label+"-n")
	out := make([]string, n)
	for i := range out {
		out[i] = genString(t, label, weird)
	}
	return out
}

func genTime(t *rapid.T, label string) time.Time {
	tm := time.Unix(rapid.Int64Range(-70_000_000_000, 300_000_000_000).Draw(t, label+"-s"), rapid.Int64Range(0, 999_999_999).Draw(t, label+"-ns"))
	switch rapid.IntRange(0, 2).Draw(t, label+"-zone") {
	case 0:
		return tm.UTC()
	case 1:
		return tm.In(time.FixedZone("z", rapid.IntRange(-30*3600, 30*3600).Draw(t, label+"-off")))
	}
	return tm.Round(time.Duration(rapid.SampledFrom([]int64{1, 1000, 1e6, 1e9}).Draw(t, label+"-round"))).UTC()
}

func genRecord(t *rapid.T) (Record, bool) {
	weird := rapid.IntRange(0, 3).Draw(t, "weird") == 0
	r := Record{
		Version: rapid.IntRange(-1, 3).Draw(t, "v"),
		Seq:     rapid.Uint64().Draw(t, "seq"),
		Flow:    genString(t, "flow", weird),
		FlowSeq: rapid.Uint64().Draw(t, "flow_seq"),
		Event:   Event(genString(t, "event", weird)),
		From:    State(genString(t, "from", weird)),
		To:      State(genString(t, "to", weird)),
		Time:    genTime(t, "time"),
	}
	if rapid.Bool().Draw(t, "has-data") {
		d := &r.Data
		d.Provider = genString(t, "provider", weird)
		d.Account = genString(t, "account", weird)
		d.Scopes = genStrings(t, "scopes", weird)
		d.Transport = Transport(genString(t, "transport", weird))
		d.RedirectURI = genString(t, "redirect", weird)
		if rapid.Bool().Draw(t, "has-deadline") {
			dl := genTime(t, "deadline")
			d.Deadline = &dl
		}
		d.Issuer = genString(t, "issuer", weird)
		d.IssuerRequired = rapid.Bool().Draw(t, "issuer_required")
		d.Reason = Reason(genString(t, "reason", weird))
		d.Message = genString(t, "message", weird)
		d.ErrorCode = genString(t, "error_code", weird)
		d.HTTPStatus = rapid.IntRange(-600, 600).Draw(t, "status")
		d.GrantedScopes = genStrings(t, "granted", weird)
		d.TokenStored = rapid.Bool().Draw(t, "stored")
		d.SupersededBy = genString(t, "superseded", weird)
		d.CodeFingerprint = genString(t, "fp", weird)
		d.Ignored = Ignored(genString(t, "ignored", weird))
		// Each group may be absent, present but empty, or filled.
		switch rapid.IntRange(0, 2).Draw(t, "mcp") {
		case 1:
			d.MCPDiscovery = &MCPDiscovery{}
		case 2:
			d.MCPDiscovery = &MCPDiscovery{
				Resource: genString(t, "resource", weird), ResourceMetadataURL: genString(t, "resource_metadata", weird),
				ServerMetadataURL: genString(t, "server_metadata", weird), Registration: genString(t, "registration", weird),
				ClientID: genString(t, "client_id", weird), TokenAuth: genString(t, "token_auth", weird),
				ScopeSource: genString(t, "scope_source", weird), Discovery: genStrings(t, "discovery", weird),
			}
		}
		switch rapid.IntRange(0, 2).Draw(t, "device") {
		case 1:
			d.DevicePolling = &DevicePolling{}
		case 2:
			d.DevicePolling = &DevicePolling{}
			d.VerificationURI = genString(t, "verification_uri", weird)
			d.PollInterval = rapid.IntRange(-100, 100000).Draw(t, "poll_interval")
			if rapid.Bool().Draw(t, "has-next-poll") {
				np := genTime(t, "next_poll")
				d.NextPoll = &np
			}
		}
		d.BindingFingerprint = genString(t, "binding_fp", weird)
		switch rapid.IntRange(0, 2).Draw(t, "tokens") {
		case 1:
			d.TokenEvents = &TokenEvents{}
		case 2:
			d.TokenEvents = &TokenEvents{}
			if rapid.Bool().Draw(t, "has-token-expiry") {
				te := genTime(t, "token_expiry")
				d.TokenExpiry = &te
			}
			d.RefreshFP = genString(t, "refresh_fp", weird)
			d.Rotated = rapid.Bool().Draw(t, "rotated")
			d.Transient = rapid.Bool().Draw(t, "transient")
			d.Revocation = Revocation(genString(t, "revocation", weird))
		}
	}
	return r, weird
}

// BenchmarkEncode compares Encode with encoding/json on a flow's created
// record, the largest one every connect writes.
func BenchmarkEncode(b *testing.B) {
	dl := time.Date(2026, 11, 29, 12, 5, 0, 123456789, time.UTC)
	r := Record{Version: SchemaVersion, Flow: "bmV3ZXJGbG93MDAwMDAwMDAyYWJjZGVmZ2hpamtsbW5vcA", FlowSeq: 1, Event: Created, To: Pending,
		Time: dl.Add(-5 * time.Minute), Data: Data{Provider: "github", Account: "worker-12", Scopes: []string{"repo"},
			Transport: Loopback, RedirectURI: "http://127.0.0.1:8085/oauth/callback", Deadline: &dl}}
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
