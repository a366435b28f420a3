package states

import (
	"fmt"
	"strings"
	"time"
)

// Mermaid renders the transition table as a Mermaid state diagram. It is
// checked into docs/machine.md; a test fails when that copy is stale.
func Mermaid() string {
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	for _, t := range Table {
		label := string(t.Event)
		if rs := reasonsOf[t.Event]; len(rs) > 0 && t.Event != ExchangeSucceeded {
			label += " (" + joinReasons(rs, ", ") + ")"
		}
		if len(t.From) == 0 {
			fmt.Fprintf(&b, "    [*] --> %s: %s\n", t.To, label)
			continue
		}
		for _, from := range t.From {
			to := t.To
			if to == "" {
				to = from
			}
			fmt.Fprintf(&b, "    %s --> %s: %s\n", from, to, label)
		}
	}
	for _, s := range AllStates {
		if s.Terminal() {
			fmt.Fprintf(&b, "    %s --> [*]\n", s)
		}
	}
	return b.String()
}

// DOT renders the transition table as a Graphviz digraph.
func DOT() string {
	var b strings.Builder
	b.WriteString("digraph flowd {\n    rankdir=LR;\n    new [shape=point];\n")
	for _, s := range AllStates {
		shape := "ellipse"
		if s.Terminal() {
			shape = "doublecircle"
		}
		fmt.Fprintf(&b, "    %s [shape=%s];\n", s, shape)
	}
	for _, t := range Table {
		label := string(t.Event)
		if rs := reasonsOf[t.Event]; len(rs) > 0 && t.Event != ExchangeSucceeded {
			label += "\\n(" + joinReasons(rs, ", ") + ")"
		}
		if len(t.From) == 0 {
			fmt.Fprintf(&b, "    new -> %s [label=%q];\n", t.To, label)
			continue
		}
		for _, from := range t.From {
			to := t.To
			if to == "" {
				to = from
			}
			fmt.Fprintf(&b, "    %s -> %s [label=\"%s\"];\n", from, to, label)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func joinReasons(rs []Reason, sep string) string {
	ss := make([]string, len(rs))
	for i, r := range rs {
		ss[i] = string(r)
	}
	return strings.Join(ss, sep)
}

// FormatRecord renders one record as a line for people: time, time since the
// previous record of the flow (prev, or zero), event, from -> to, and the
// data that is set. It never prints secrets because records hold none.
func FormatRecord(rec Record, prev time.Time) string {
	since := "-"
	if !prev.IsZero() {
		since = "+" + rec.Time.Sub(prev).Round(time.Millisecond).String()
	}
	from := string(rec.From)
	if from == "" {
		from = "(new)"
	}
	line := fmt.Sprintf("%s  %-9s  %-18s  %s -> %s", rec.Time.UTC().Format("2006-01-02T15:04:05.000Z"), since, rec.Event, from, rec.To)
	if d := FormatData(rec.Data); d != "" {
		line += "  " + d
	}
	return line
}

// FormatData renders the fields of d that are set as key=value pairs.
func FormatData(d Data) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			if strings.ContainsAny(v, " \t\"=") {
				v = fmt.Sprintf("%q", v)
			}
			parts = append(parts, k+"="+v)
		}
	}
	add("reason", string(d.Reason))
	add("provider", d.Provider)
	add("account", d.Account)
	add("scopes", strings.Join(d.Scopes, ","))
	add("transport", string(d.Transport))
	add("redirect_uri", d.RedirectURI)
	if d.Deadline != nil {
		add("deadline", d.Deadline.UTC().Format(time.RFC3339))
	}
	add("issuer", d.Issuer)
	if d.IssuerRequired {
		add("issuer_required", "true")
	}
	add("nonce_fp", d.NonceFingerprint)
	m := d.MCP()
	add("resource", m.Resource)
	add("resource_metadata", m.ResourceMetadataURL)
	add("server_metadata", m.ServerMetadataURL)
	add("registration", m.Registration)
	add("client_id", m.ClientID)
	add("token_auth", m.TokenAuth)
	add("scope_source", m.ScopeSource)
	add("discovery", strings.Join(m.Discovery, "; "))
	add("message", d.Message)
	add("error_code", d.ErrorCode)
	if d.HTTPStatus != 0 {
		add("http_status", fmt.Sprint(d.HTTPStatus))
	}
	add("granted_scopes", strings.Join(d.GrantedScopes, ","))
	if d.TokenStored {
		add("token_stored", "true")
	}
	add("subject", d.Subject)
	add("email", d.Email)
	add("superseded_by", d.SupersededBy)
	add("code_fp", d.CodeFingerprint)
	add("ignored", string(d.Ignored))
	p := d.Polling()
	add("verification_uri", p.VerificationURI)
	if p.PollInterval != 0 {
		add("poll_interval", (time.Duration(p.PollInterval) * time.Second).String())
	}
	if p.NextPoll != nil {
		add("next_poll", p.NextPoll.UTC().Format(time.RFC3339))
	}
	add("binding_fp", d.BindingFingerprint)
	t := d.Tokens()
	if t.TokenExpiry != nil {
		add("token_expiry", t.TokenExpiry.UTC().Format(time.RFC3339))
	}
	add("refresh_fp", t.RefreshFP)
	if t.Rotated {
		add("rotated", "true")
	}
	if t.Transient {
		add("transient", "true")
	}
	add("revocation", string(t.Revocation))
	return strings.Join(parts, " ")
}

// FormatHistory renders a flow's history, one record a line, then the flow
// it adds up to. now is the caller's clock, used for the time left.
func FormatHistory(history []Record, now time.Time) string {
	var b strings.Builder
	var prev time.Time
	for _, rec := range history {
		b.WriteString(FormatRecord(rec, prev))
		b.WriteByte('\n')
		prev = rec.Time
	}
	f, err := Fold(history)
	if err != nil {
		fmt.Fprintf(&b, "history does not replay: %v\n", err)
		return b.String()
	}
	b.WriteString(FormatFlow(f, now))
	return b.String()
}

// FormatFlow renders a flow's current standing: state, reason, deadline and
// the time left at now.
func FormatFlow(f Flow, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state:    %s", f.State)
	if f.Reason != "" {
		fmt.Fprintf(&b, " (%s: %s)", f.Reason, f.Reason.Describe())
	}
	if f.Exchanging {
		b.WriteString(" (exchanging the code)")
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "deadline: %s", f.Deadline.UTC().Format(time.RFC3339))
	if f.State.Live() {
		left := f.Deadline.Sub(now).Round(time.Second)
		if left > 0 {
			fmt.Fprintf(&b, " (%s left)", left)
		} else {
			fmt.Fprintf(&b, " (passed %s ago)", -left)
		}
	}
	b.WriteByte('\n')
	if f.Transport == Device && f.State.Live() {
		fmt.Fprintf(&b, "polling:  every %s, next at %s\n", f.PollInterval, f.NextPollAfter(now).UTC().Format(time.RFC3339))
	}
	if f.Conn != nil {
		b.WriteString(FormatConnection(*f.Conn, now))
	}
	return b.String()
}

// FormatConnection renders what a complete flow's connection holds and how
// it stands at now: the lines inspect prints under the flow.
func FormatConnection(c Connection, now time.Time) string {
	var b strings.Builder
	if !c.Active() {
		fmt.Fprintf(&b, "connection: disconnected %s (revocation: %s)\n", c.Disconnected.UTC().Format(time.RFC3339), c.Revocation)
		return b.String()
	}
	fmt.Fprintf(&b, "connection: %s", c.HealthAt(now))
	if f := c.LastFailure; f != nil {
		kind := "rejected"
		if f.Transient {
			kind = "transient"
		}
		fmt.Fprintf(&b, " (%s %s", kind, f.ErrorCode)
		if f.HTTPStatus != 0 {
			fmt.Fprintf(&b, ", HTTP %d", f.HTTPStatus)
		}
		fmt.Fprintf(&b, ", failing since %s)", c.FailingSince.UTC().Format(time.RFC3339))
	}
	if c.Refreshing {
		fmt.Fprintf(&b, " (refresh under way since %s)", c.RefreshingSince.UTC().Format(time.RFC3339))
	}
	b.WriteByte('\n')
	expiry := "none"
	if !c.TokenExpiry.IsZero() {
		expiry = c.TokenExpiry.UTC().Format(time.RFC3339)
	}
	last := "never"
	if !c.LastRefresh.IsZero() {
		last = c.LastRefresh.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "token:    expires %s, refresh token %s, last refresh %s (%d refreshes, %d rotated)\n",
		expiry, map[bool]string{true: "held", false: "none"}[c.HasRefreshToken()], last, c.Refreshes, c.Rotations)
	return b.String()
}
