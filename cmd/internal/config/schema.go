package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// HelpHint is where a config error sends the user for the reference. It
// works for someone who only ran `go install`: flowd carries the reference.
const HelpHint = "flowd -help-config prints every setting"

// kind is the TOML type a setting takes.
type kind int

const (
	kindString kind = iota
	kindDuration
	kindStringList
	kindStringTable
	kindTable
	kindBool
)

// setting is one key a config table may hold: its type and an example a
// person can copy.
type setting struct {
	kind    kind
	example string
}

// topSettings and providerSettings are the keys flowd knows, kept beside
// the file struct in config.go (a test checks they agree).
var (
	topSettings = map[string]setting{
		"listen":             {kindString, `"127.0.0.1:8085"`},
		"public_base_url":    {kindString, `"https://flowd.example.com"`},
		"ttl":                {kindDuration, `"5m"`},
		"retention":          {kindDuration, `"168h"`},
		"service_token_file": {kindString, `"/etc/flowd/service_token"`},
		"state_dir":          {kindString, `"/var/lib/flowd"`},
		"socket":             {kindString, `"/run/flowd/flowd.sock"`},
		"store":              {kindString, `"etcd"`},
		"etcd":               {kindTable, `[etcd] with endpoints = ["https://etcd-1:2379"]`},
		"providers":          {kindTable, `[providers.github] with client_id = "..."`},
		"mcp":                {kindTable, `[mcp] with client_metadata_url = "https://..."`},
	}
	providerSettings = map[string]setting{
		"preset":                     {kindString, `"github"`},
		"issuer":                     {kindString, `"https://accounts.example.com"`},
		"auth_url":                   {kindString, `"https://example.com/oauth/authorize"`},
		"token_url":                  {kindString, `"https://example.com/oauth/token"`},
		"client_id":                  {kindString, `"Iv1.0123456789abcdef"`},
		"client_secret":              {kindString, `"..." (better: client_secret_env)`},
		"client_secret_env":          {kindString, `"GITHUB_CLIENT_SECRET"`},
		"scopes":                     {kindStringList, `["read:user", "repo"]`},
		"auth_params":                {kindStringTable, `{ prompt = "consent" }`},
		"auth_style":                 {kindString, `"in_params" or "in_header"`},
		"tenant":                     {kindString, `"contoso.onmicrosoft.com"`},
		"token_endpoint_auth_method": {kindString, `"client_secret_basic", "client_secret_post" or "none"`},
		"revocation_url":             {kindString, `"https://example.com/oauth/revoke"`},
		"device_auth_url":            {kindString, `"https://github.com/login/device/code"`},
		"userinfo_url":               {kindString, `"https://api.github.com/user"`},
	}
	mcpSettings = map[string]setting{
		"client_name":         {kindString, `"flowd"`},
		"client_metadata_url": {kindString, `"https://flowd.example.com/client.json"`},
		"no_offline_access":   {kindBool, `true`},
		"clients":             {kindTable, `[mcp.clients."https://auth.example.com"] with client_id = "..."`},
	}
	etcdSettings = map[string]setting{
		"endpoints":     {kindStringList, `["https://etcd-1:2379", "https://etcd-2:2379"]`},
		"prefix":        {kindString, `"flowd/"`},
		"cert":          {kindString, `"/etc/flowd/etcd-client.pem"`},
		"key":           {kindString, `"/etc/flowd/etcd-client-key.pem"`},
		"ca":            {kindString, `"/etc/flowd/etcd-ca.pem"`},
		"seal_key_file": {kindString, `"/etc/flowd/seal.key"`},
	}
	mcpClientSettings = map[string]setting{
		"client_id":         {kindString, `"my-client-id"`},
		"client_secret":     {kindString, `"..." (better: client_secret_env)`},
		"client_secret_env": {kindString, `"MCP_CLIENT_SECRET"`},
		"auth_method":       {kindString, `"client_secret_basic", "client_secret_post" or "none"`},
	}
)

// checkShape walks the decoded file against the settings flowd knows,
// before it is decoded into the typed struct: so an unknown key can be
// answered with the nearest known one, and a value of the wrong type with
// what was expected and an example, rather than the TOML library's
// "incompatible types: ... destination has type slice". Values are never
// quoted back: a misplaced secret stays out of the error.
func checkShape(raw map[string]any) *Error {
	if err := checkTable("", raw, topSettings); err != nil {
		return err
	}
	if err := checkMCPShape(raw); err != nil {
		return err
	}
	if e, ok := raw["etcd"].(map[string]any); ok {
		if err := checkTable("etcd.", e, etcdSettings); err != nil {
			return err
		}
	}
	provs, ok := raw["providers"].(map[string]any)
	if !ok {
		return nil
	}
	for _, name := range sortedKeys(provs) {
		p, ok := provs[name].(map[string]any)
		if !ok {
			return &Error{Field: "providers." + name, Reason: fmt.Sprintf("expected a table, like [providers.%s] with client_id = \"...\" on the lines below; found %s", name, describe(provs[name]))}
		}
		if err := checkTable("providers."+name+".", p, providerSettings); err != nil {
			return err
		}
	}
	return nil
}

// checkMCPShape checks the [mcp] table and its pre-registered clients.
func checkMCPShape(raw map[string]any) *Error {
	m, ok := raw["mcp"].(map[string]any)
	if !ok {
		return nil
	}
	if err := checkTable("mcp.", m, mcpSettings); err != nil {
		return err
	}
	clients, ok := m["clients"].(map[string]any)
	if !ok {
		return nil
	}
	for _, server := range sortedKeys(clients) {
		c, ok := clients[server].(map[string]any)
		if !ok {
			return &Error{Field: fmt.Sprintf("mcp.clients.%q", server), Reason: fmt.Sprintf("expected a table, like [mcp.clients.%q] with client_id = \"...\" on the lines below; found %s", server, describe(clients[server]))}
		}
		if err := checkTable(fmt.Sprintf("mcp.clients.%q.", server), c, mcpClientSettings); err != nil {
			return err
		}
	}
	return nil
}

func checkTable(prefix string, t map[string]any, known map[string]setting) *Error {
	for _, k := range sortedKeys(t) {
		s, ok := known[k]
		if !ok {
			reason := "unknown setting"
			if near := nearest(k, slices.Collect(maps.Keys(known))); near != "" {
				reason += fmt.Sprintf("; did you mean %s?", near)
			}
			return &Error{Field: prefix + k, Reason: reason + " (" + HelpHint + ")"}
		}
		if msg := s.check(t[k]); msg != "" {
			return &Error{Field: prefix + k, Reason: msg}
		}
	}
	return nil
}

// check returns "" when v fits, else what was expected, with the example.
func (s setting) check(v any) string {
	switch s.kind {
	case kindString, kindDuration:
		if _, ok := v.(string); ok {
			return ""
		}
		what := "a string"
		if s.kind == kindDuration {
			what = "a duration in quotes"
		}
		return fmt.Sprintf("expected %s, like %s; found %s", what, s.example, describe(v))
	case kindStringList:
		list, ok := v.([]any)
		if !ok {
			return fmt.Sprintf("expected a list, like %s; found %s", s.example, describe(v))
		}
		for i, item := range list {
			if _, ok := item.(string); !ok {
				return fmt.Sprintf("expected a list of strings, like %s; item %d is %s", s.example, i+1, describe(item))
			}
		}
	case kindStringTable:
		tbl, ok := v.(map[string]any)
		if !ok {
			return fmt.Sprintf("expected a table of strings, like %s; found %s", s.example, describe(v))
		}
		for _, k := range sortedKeys(tbl) {
			if _, ok := tbl[k].(string); !ok {
				return fmt.Sprintf("expected a table of strings, like %s; %s is %s", s.example, k, describe(tbl[k]))
			}
		}
	case kindTable:
		if _, ok := v.(map[string]any); !ok {
			return fmt.Sprintf("expected a table, like %s; found %s", s.example, describe(v))
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return fmt.Sprintf("expected true or false, like %s; found %s", s.example, describe(v))
		}
	}
	return ""
}

// describe names a TOML value's type the way the TOML spec does.
func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// nearest is the known key closest to k by edit distance when it is close
// enough to be a typo (a third of its length, at least 1 and at most 3
// edits), else "".
func nearest(k string, known []string) string {
	slices.Sort(known)
	best, bestD := "", -1
	for _, c := range known {
		d := editDistance(strings.ToLower(k), c)
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	limit := max(1, min(3, len(best)/3))
	if bestD < 0 || bestD > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, counting an
// adjacent transposition ("secert") as one edit (optimal string alignment).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.Sort(keys)
	return keys
}

// SettingNames lists every value a config file may set (a provider's
// without the "providers.<name>." prefix; not the providers table itself),
// for documentation checks.
func SettingNames() []string {
	top := slices.DeleteFunc(sortedKeys(topSettings), func(k string) bool { return k == "providers" || k == "mcp" || k == "etcd" })
	top = append(top, sortedKeys(providerSettings)...)
	top = append(top, sortedKeys(etcdSettings)...)
	top = append(top, slices.DeleteFunc(sortedKeys(mcpSettings), func(k string) bool { return k == "clients" })...)
	return append(top, sortedKeys(mcpClientSettings)...)
}
