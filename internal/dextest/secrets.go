package dextest

import (
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Secrets is the set of secret values seen during a test: what must never
// appear in a database file, a log or an export. It is safe for concurrent
// use.
type Secrets struct {
	mu   sync.Mutex
	seen map[string]string // value -> kind
}

// NewSecrets returns an empty set.
func NewSecrets() *Secrets { return &Secrets{seen: map[string]string{}} }

// minSecretLen keeps short values (empty strings, "Bearer") out of the set:
// they would match innocent text.
const minSecretLen = 8

// Add records value as a secret of the given kind ("code", "access_token").
// Empty and very short values are ignored.
func (s *Secrets) Add(kind, value string) {
	if len(value) < minSecretLen {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[value] = kind
	// A JWT's header and claims are not secret (the header is the same for
	// every token), but its signature is: a log holding only the signature
	// still identifies the token.
	if parts := strings.Split(value, "."); len(parts) == 3 && len(parts[2]) >= minSecretLen {
		s.seen[parts[2]] = kind + " (signature)"
	}
}

// AddTokenResponse records the tokens of a token endpoint's JSON answer.
func (s *Secrets) AddTokenResponse(resp map[string]any) {
	for _, k := range []string{"access_token", "refresh_token", "id_token"} {
		if v, ok := resp[k].(string); ok {
			s.Add(k, v)
		}
	}
}

// Len reports how many secret values (including JWT signatures) are known.
func (s *Secrets) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// Values returns a copy of every known secret value with its kind, for a
// scanner that looks for many secrets at once in large data (Leaks
// searches for each secret in turn). Never print the values.
func (s *Secrets) Values() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.seen))
	for v, k := range s.seen {
		out[v] = k
	}
	return out
}

// Kinds counts the known secrets by kind.
func (s *Secrets) Kinds() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, k := range s.seen {
		out[k]++
	}
	return out
}

// Leaks returns a description of every known secret found in data, in its
// raw, URL-encoded or JSON-escaped form. The description names the kind and
// the offset, never the secret itself, so a failing test does not print it.
func (s *Secrets) Leaks(data []byte) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v, kind := range s.seen {
		forms := []string{v, url.QueryEscape(v), strings.ReplaceAll(v, "/", `\/`)}
		for _, f := range forms {
			if i := bytes.Index(data, []byte(f)); i >= 0 {
				out = append(out, fmt.Sprintf("%s at byte %d", kind, i))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}
