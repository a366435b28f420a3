package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

// pasted is what a user pasted at the manual transport's prompt, reduced to
// the callback's parameters. State is empty when only a code was pasted.
type pasted struct {
	State            string
	Code             string
	Error            string
	ErrorDescription string
	// Iss is the redirect's iss (RFC 9207): flowd refuses a redirect whose
	// iss is wrong, or missing where the provider promises it.
	Iss string
}

// errNothingPasted is returned for an empty line; the prompt just asks again.
var errNothingPasted = errors.New("nothing pasted")

// parsePaste accepts the three things users paste: the whole URL the
// browser ended on, its query string alone ("?code=…&state=…" or without
// the "?"), or the bare authorization code.
func parsePaste(s string) (pasted, error) {
	s = strings.TrimSpace(s)
	// Terminals and chat tools sometimes wrap pastes in quotes or angle brackets.
	s = strings.Trim(s, `"'<>`)
	if s == "" {
		return pasted{}, errNothingPasted
	}
	q, isQuery, err := queryOf(s)
	if err != nil {
		return pasted{}, err
	}
	if !isQuery {
		if strings.ContainsAny(s, " \t") {
			return pasted{}, errors.New("that is not a URL or a code: paste the whole address from the browser's address bar")
		}
		if len(s) > wire.MaxCodeLen {
			return pasted{}, fmt.Errorf("that code is %d characters long, more than the %d flowd accepts: paste the whole address from the browser's address bar instead", len(s), wire.MaxCodeLen)
		}
		return pasted{Code: s}, nil
	}
	p := pasted{
		State:            q.Get("state"),
		Code:             q.Get("code"),
		Error:            q.Get("error"),
		ErrorDescription: q.Get("error_description"),
		Iss:              q.Get("iss"),
	}
	if p.Code == "" && p.Error == "" {
		return pasted{}, errors.New("that address carries neither a code nor an error: paste the address the browser ended on after you approved (it contains code=…)")
	}
	return p, nil
}

// queryOf finds the query parameters in s: a full URL (its query, or its
// fragment when the query is empty), a path with a query, or a bare query
// string. isQuery is false when s looks like a bare code.
func queryOf(s string) (q url.Values, isQuery bool, err error) {
	raw := ""
	switch {
	case strings.Contains(s, "://"):
		u, err := url.Parse(s)
		if err != nil {
			return nil, true, fmt.Errorf("that address does not parse (%v): paste it again, whole", err)
		}
		raw = u.RawQuery
		if raw == "" {
			raw = u.Fragment
		}
	case strings.Contains(s, "?"):
		raw = s[strings.Index(s, "?")+1:]
	case strings.Contains(s, "="):
		raw = s
	default:
		return nil, false, nil
	}
	// A fragment may trail the query ("…&state=x#_=_" from some providers).
	raw, _, _ = strings.Cut(raw, "#")
	q, err = url.ParseQuery(raw)
	if err != nil {
		return nil, true, fmt.Errorf("that address's query does not parse (%v): paste it again, whole", err)
	}
	return q, true, nil
}

// stateFromArg returns the state an argument names: the state parameter of
// a pasted callback URL or query string, else the argument itself (a state
// or a prefix of one).
func stateFromArg(arg string) (string, error) {
	arg = strings.Trim(strings.TrimSpace(arg), `"'<>`)
	if arg == "" {
		return "", usagef("empty state: give a flow's state, a unique prefix of it, or the callback URL")
	}
	q, isQuery, err := queryOf(arg)
	if err != nil {
		return "", &usageError{err}
	}
	if !isQuery {
		return arg, nil
	}
	st := q.Get("state")
	if st == "" {
		return "", usagef("that URL has no state parameter: paste the callback URL the browser ended on, or give the flow's state")
	}
	return st, nil
}
