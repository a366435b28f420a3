package states

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// SchemaVersion is the version of the record format this code writes.
// Records of older versions are upgraded on read by the upcasters in
// upcast; newer versions are refused. docs/record-format.md documents every
// version.
const SchemaVersion = 2

// Transport says how the provider's redirect reaches flowd.
type Transport string

// The transports.
const (
	// Loopback: the redirect goes to flowd's one stable loopback listener.
	Loopback Transport = "loopback"
	// Gateway: the redirect goes to a public gateway that relays it to flowd.
	Gateway Transport = "gateway"
	// Manual: the user pastes the URL the browser ended on (SSH, headless).
	Manual Transport = "manual"
	// Device: no redirect at all. The user types a user code at the
	// provider's verification URI on any device, and the engine polls the
	// token endpoint (OAuth 2.0 device authorization grant, RFC 8628).
	Device Transport = "device"
)

// Valid reports whether t is a known transport.
func (t Transport) Valid() bool { return t == Loopback || t == Gateway || t == Manual || t == Device }

// Ignored says why a callback changed nothing.
type Ignored string

// Why a callback was ignored.
const (
	// IgnoredInProgress: an exchange for the flow was already under way.
	IgnoredInProgress Ignored = "exchange_in_progress"
	// IgnoredFinished: the flow had already ended (a late or repeated callback).
	IgnoredFinished Ignored = "flow_finished"
	// IgnoredBindingMissing: the flow is bound to the browser that opened
	// its launch link, and the loopback callback carried no binding cookie
	// (another browser, or another local user).
	IgnoredBindingMissing Ignored = "binding_missing"
	// IgnoredBindingMismatch: the callback carried a binding cookie that is
	// not the flow's.
	IgnoredBindingMismatch Ignored = "binding_mismatch"
)

// Record is one entry of the event log: one fact about one flow. Records
// are append-only; once written they are never rewritten.
//
// Records never carry secrets: no authorization code, PKCE verifier, client
// secret or token. Where a secret must be correlated, Data carries a keyed
// fingerprint of it.
type Record struct {
	// Version is the schema version the record was written with.
	Version int `json:"v"`
	// Seq is the record's position in the whole log, assigned by the log at
	// append time, strictly increasing.
	Seq uint64 `json:"seq"`
	// Flow is the flow's id: its OAuth state token.
	Flow string `json:"flow"`
	// FlowSeq is the record's position in its flow's history, from 1, without gaps.
	FlowSeq uint64 `json:"flow_seq"`
	// Event is what happened.
	Event Event `json:"event"`
	// From is the state before the event; empty for the first record.
	From State `json:"from"`
	// To is the state after the event.
	To State `json:"to"`
	// Time is when the event happened, in UTC.
	Time time.Time `json:"time"`
	// Data is what the event carries.
	Data Data `json:"data,omitzero"`
}

// Data is the payload of a record. Each event fills the fields that apply.
type Data struct {
	// Created
	Provider string `json:"provider,omitempty"`
	// Account names the account at the provider the flow connects. In
	// created it is the account asked for (empty: whichever account the
	// user signs in with); in exchange_succeeded it is the account the
	// token belongs to, as the provider identified it when it did.
	Account     string     `json:"account,omitempty"`
	Scopes      []string   `json:"scopes,omitempty"`
	Transport   Transport  `json:"transport,omitempty"`
	RedirectURI string     `json:"redirect_uri,omitempty"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	// Issuer is the authorization server's issuer identifier the flow's
	// redirect must name in its iss parameter (RFC 9207), fixed at start
	// so a restart checks the same one. Empty: iss is not checked.
	Issuer string `json:"issuer,omitempty"`
	// IssuerRequired: the server promised iss on every redirect
	// (authorization_response_iss_parameter_supported), so a redirect
	// without one is refused.
	IssuerRequired bool `json:"issuer_required,omitempty"`
	// NonceFingerprint is a keyed hash of the OpenID Connect nonce sent in
	// the authorization request, never the nonce.
	NonceFingerprint string `json:"nonce_fp,omitempty"`

	// Created, for a connect by MCP server URL: what discovery found.
	// Behind a pointer, as are the device and token-event fields below:
	// most records carry none of them, and a Record is copied on every
	// transition. encoding/json writes the fields flat, as if declared
	// here. Nil when the record has none: read them as d.ClientID only
	// after checking d.MCPDiscovery != nil (or through d.MCP()).
	*MCPDiscovery

	// Terminal events
	Reason Reason `json:"reason,omitempty"`
	// Message is the provider's own text (error_description) or a short detail.
	Message string `json:"message,omitempty"`
	// ErrorCode is the provider's error code (error=... or the token endpoint's "error").
	ErrorCode string `json:"error_code,omitempty"`
	// HTTPStatus is the token endpoint's status when an exchange failed.
	HTTPStatus    int      `json:"http_status,omitempty"`
	GrantedScopes []string `json:"granted_scopes,omitempty"`
	TokenStored   bool     `json:"token_stored,omitempty"`
	// Subject is the provider's stable id of the user (the ID token's sub,
	// or the user id of a userinfo endpoint); Email is the user's address
	// when the provider gave one. Never the token they came from.
	Subject string `json:"subject,omitempty"`
	Email   string `json:"email,omitempty"`
	// SupersededBy names the flow that replaced this one.
	SupersededBy string `json:"superseded_by,omitempty"`

	// Callbacks
	// CodeFingerprint is a keyed hash of the authorization code, never the code.
	CodeFingerprint string  `json:"code_fp,omitempty"`
	Ignored         Ignored `json:"ignored,omitempty"`

	// Device flows (device_authorized, poll_slowed). Nil on every other
	// record: check before reading d.PollInterval (or use d.Polling()).
	*DevicePolling
	// BindingFingerprint (browser_bound) is a keyed hash of the secret the
	// launch page set as the flow's binding cookie, never the secret: a
	// loopback callback must carry the cookie whose hash this is.
	BindingFingerprint string `json:"binding_fp,omitempty"`
	// Connections (exchange_succeeded and the token events). Nil when
	// the record has none: check before reading d.RefreshFP (or use
	// d.Tokens()).
	*TokenEvents
}

// MCPDiscovery is what a created record of a connect by MCP server URL
// says discovery found, so inspect shows why the connect went where it
// went (Data.Issuer is the authorization server it chose). None is a
// secret. Data embeds it.
type MCPDiscovery struct {
	// Resource is the resource indicator (RFC 8707) sent on the
	// authorization and token requests.
	Resource string `json:"resource,omitempty"`
	// ResourceMetadataURL is where the Protected Resource Metadata (RFC 9728) was found.
	ResourceMetadataURL string `json:"resource_metadata,omitempty"`
	// ServerMetadataURL is where the authorization server metadata was found.
	ServerMetadataURL string `json:"server_metadata,omitempty"`
	// Registration is how the client is registered there: pre_registered,
	// client_id_metadata_document, dynamic, or dynamic_reused.
	Registration string `json:"registration,omitempty"`
	// ClientID is the client id used (public, never the secret).
	ClientID string `json:"client_id,omitempty"`
	// TokenAuth is the token endpoint auth method: none,
	// client_secret_basic or client_secret_post.
	TokenAuth string `json:"token_auth,omitempty"`
	// ScopeSource says where Scopes came from: www_authenticate,
	// scopes_supported, omitted, or step_up (granted plus required).
	ScopeSource string `json:"scope_source,omitempty"`
	// Discovery lists the requests discovery made, with their outcome.
	Discovery []string `json:"discovery,omitempty"`
}

// DevicePolling is what a device flow's device_authorized and
// poll_slowed records carry. Data embeds it.
type DevicePolling struct {
	// VerificationURI is where the user enters the user code (the code itself is sealed).
	VerificationURI string `json:"verification_uri,omitempty"`
	// PollInterval is the seconds between two polls of the token endpoint.
	PollInterval int `json:"poll_interval,omitempty"`
	// NextPoll is when the engine polls next; later polls follow every
	// PollInterval seconds, so a restart resumes on the same schedule.
	NextPoll *time.Time `json:"next_poll,omitempty"`
}

// TokenEvents is what exchange_succeeded and the token events
// (refresh_started, token_refreshed, refresh_failed, disconnected) say
// about the connection's tokens. Data embeds it.
type TokenEvents struct {
	// TokenExpiry is when the stored access token expires; absent when the
	// provider gave no expiry.
	TokenExpiry *time.Time `json:"token_expiry,omitempty"`
	// RefreshFP is a keyed fingerprint of the refresh token held after the
	// event (exchange_succeeded, token_refreshed) or about to be spent
	// (refresh_started); absent when none is held. Never the token.
	RefreshFP string `json:"refresh_fp,omitempty"`
	// Rotated: the provider returned a new refresh token and it was saved.
	Rotated bool `json:"rotated,omitempty"`
	// Transient: a refresh_failed that trying later may cure (network,
	// timeout, HTTP 5xx or 429); without it the provider rejected the refresh.
	Transient bool `json:"transient,omitempty"`
	// Revocation says what the provider was told on disconnect.
	Revocation Revocation `json:"revocation,omitempty"`
}

// MCP returns the record's MCP discovery fields, all empty when it has
// none: a read that cannot panic on a record without them.
func (d *Data) MCP() MCPDiscovery {
	if d.MCPDiscovery == nil {
		return MCPDiscovery{}
	}
	return *d.MCPDiscovery
}

// Polling returns the record's device polling fields, all empty when it
// has none.
func (d *Data) Polling() DevicePolling {
	if d.DevicePolling == nil {
		return DevicePolling{}
	}
	return *d.DevicePolling
}

// Tokens returns the record's token fields, all empty when it has none.
func (d *Data) Tokens() TokenEvents {
	if d.TokenEvents == nil {
		return TokenEvents{}
	}
	return *d.TokenEvents
}

// compact drops the field groups that are present but empty, as a
// decoded record gets when its JSON names one of their fields with an
// empty value: the record then equals what its own encoding decodes to.
func (d *Data) compact() {
	if d.MCPDiscovery != nil && d.MCPDiscovery.isZero() {
		d.MCPDiscovery = nil
	}
	if d.DevicePolling != nil && *d.DevicePolling == (DevicePolling{}) {
		d.DevicePolling = nil
	}
	if d.TokenEvents != nil && *d.TokenEvents == (TokenEvents{}) {
		d.TokenEvents = nil
	}
}

func (m *MCPDiscovery) isZero() bool {
	return m.Resource == "" && m.ResourceMetadataURL == "" && m.ServerMetadataURL == "" && m.Registration == "" &&
		m.ClientID == "" && m.TokenAuth == "" && m.ScopeSource == "" && len(m.Discovery) == 0
}

// Revocation is the outcome of asking the provider to revoke a
// connection's tokens (RFC 7009) on disconnect.
type Revocation string

// Revocation outcomes.
const (
	// RevocationDone: the revocation endpoint accepted the request.
	RevocationDone Revocation = "revoked"
	// RevocationUnsupported: the provider has no revocation endpoint; its
	// tokens stay valid at the provider until they expire.
	RevocationUnsupported Revocation = "unsupported"
	// RevocationFailed: the revocation endpoint refused or did not answer;
	// error_code, http_status and message say how.
	RevocationFailed Revocation = "failed"
)

// Valid reports whether r is a known revocation outcome.
func (r Revocation) Valid() bool {
	return r == RevocationDone || r == RevocationUnsupported || r == RevocationFailed
}

// RecordError names the record a check failed on.
type RecordError struct {
	// Line is the 1-based line of the record in an exported log, or 0.
	Line    int
	Seq     uint64
	Flow    string
	FlowSeq uint64
	Err     error
}

func (e *RecordError) Error() string {
	where := fmt.Sprintf("record seq=%d flow=%s flow_seq=%d", e.Seq, ShortID(e.Flow), e.FlowSeq)
	if e.Line > 0 {
		where = fmt.Sprintf("line %d: %s", e.Line, where)
	}
	return where + ": " + e.Err.Error()
}

func (e *RecordError) Unwrap() error { return e.Err }

// ShortID shortens a flow id for display; ids are long random tokens and a
// prefix is what users type.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

// Encode returns the record's stored form: one line of JSON, no newline.
func (r Record) Encode() ([]byte, error) {
	if r.Version == 0 {
		r.Version = SchemaVersion
	}
	if b, ok := appendRecord(make([]byte, 0, 384), &r); ok {
		return b, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record seq=%d: %w", r.Seq, err)
	}
	return b, nil
}

// Decode parses a stored or exported record, upgrading older schema
// versions. Unknown fields, a missing or newer version, and malformed JSON
// are errors: a record is never half-read.
func Decode(b []byte) (Record, error) {
	return decode(b, SchemaVersion, upcasters)
}

// decode is Decode with the current version and the upcasters as
// parameters, so tests can run the upgrade path before a second version
// exists.
func decode(b []byte, current int, ups map[int]func([]byte) ([]byte, error)) (Record, error) {
	v, err := version(b)
	if err != nil {
		return Record{}, err
	}
	switch {
	case v < 1:
		return Record{}, fmt.Errorf("%w %d: versions start at 1; the record is damaged", ErrUnsupportedVersion, v)
	case v > current:
		return Record{}, fmt.Errorf("%w %d (this flowd reads 1 to %d; upgrade flowd to read newer logs)", ErrUnsupportedVersion, v, current)
	}
	for ; v < current; v++ {
		up := ups[v]
		if up == nil {
			// A missing upcaster is a bug in flowd, not in the log; it must
			// still be an error rather than a panic.
			return Record{}, fmt.Errorf("%w %d: this flowd has no upgrade from it (a bug: report it)", ErrUnsupportedVersion, v)
		}
		nb, err := up(b)
		if err != nil {
			return Record{}, fmt.Errorf("%w: upgrading from version %d: %v", ErrUndecodable, v, err)
		}
		if got, err := version(nb); err != nil || got != v+1 {
			return Record{}, fmt.Errorf("%w: upgrading from version %d gave version %d, want %d (a bug: report it)", ErrUndecodable, v, got, v+1)
		}
		b = nb
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrUndecodable, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: trailing data after the record", ErrUndecodable)
	}
	r.Data.compact()
	return r, nil
}

// version reads a record's schema version without trusting the rest of it.
func version(b []byte) (int, error) {
	var head struct {
		Version *int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUndecodable, err)
	}
	if head.Version == nil {
		return 0, fmt.Errorf("%w: no schema version (field \"v\")", ErrUnsupportedVersion)
	}
	return *head.Version, nil
}

// upcasters[v] turns the JSON of a version-v record into version v+1 (and
// sets "v" to v+1; Decode checks it did). When
// the format changes: bump SchemaVersion, add the upcaster here, keep a log
// of the old version in testdata/replay, and document both in
// docs/record-format.md.
var upcasters = map[int]func([]byte) ([]byte, error){
	1: upcastV1,
}

// upcastV1 turns a version 1 record into version 2. Version 2 added
// optional data fields and events only (the iss check, token events,
// browser binding, identity, MCP discovery, device flows) and renamed
// data.principal to data.account; a version 1 record is a valid version 2
// record once the rename is made.
func upcastV1(b []byte) ([]byte, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	rec["v"] = json.RawMessage("2")
	if raw, ok := rec["data"]; ok {
		var data map[string]json.RawMessage
		if err := json.Unmarshal(raw, &data); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if p, ok := data["principal"]; ok {
			if _, has := data["account"]; !has {
				data["account"] = p
			}
			delete(data, "principal")
			nd, err := json.Marshal(data)
			if err != nil {
				return nil, err
			}
			rec["data"] = nd
		}
	}
	return json.Marshal(rec)
}
