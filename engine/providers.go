package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// providerSet is an immutable snapshot of the configured providers. The
// engine swaps whole sets, so a reader (Start, Callback, Token) sees one
// consistent set without a lock on its path.
type providerSet struct {
	byName map[string]*provider
	names  []string // sorted
}

// newProviderSet validates ps and builds a set from them: every provider
// valid and no name twice, or an error wrapping ErrInvalidProvider.
func newProviderSet(ps []Provider) (*providerSet, error) {
	set := &providerSet{byName: make(map[string]*provider, len(ps))}
	for _, p := range ps {
		if err := validateProvider(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidProvider, err)
		}
		if _, dup := set.byName[p.Name]; dup {
			return nil, fmt.Errorf("%w: provider %q is configured twice", ErrInvalidProvider, p.Name)
		}
		p.Scopes = slices.Clone(p.Scopes)
		params := make(map[string]string, len(p.AuthParams))
		for k, v := range p.AuthParams {
			params[k] = v
		}
		p.AuthParams = params
		p.AuthMethod = authMethodOf(p)
		set.byName[p.Name] = &provider{Provider: p, oauth: oauthConfig(p)}
		set.names = append(set.names, p.Name)
	}
	sort.Strings(set.names)
	return set, nil
}

// list returns the set's providers in name order.
func (s *providerSet) list() []Provider {
	out := make([]Provider, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, s.byName[n].Provider)
	}
	return out
}

// ErrInvalidProvider: a provider given to Open, SetProviders or
// AddProvider is incomplete or duplicated; nothing was changed.
var ErrInvalidProvider = errors.New("invalid provider")

// ErrProviderExists: AddProvider was given a name that is already
// configured. SetProviders replaces a provider's settings.
var ErrProviderExists = errors.New("provider already configured")

// SetProviders replaces the whole set of providers at once, while flows
// run. The set is validated first: an invalid set returns an error
// wrapping ErrInvalidProvider and changes nothing.
//
// Live flows keep running and their waiters keep waiting. A flow whose
// provider is in the new set under the same name exchanges its code with
// the new settings; one whose provider is gone is ended
// error(provider_removed) when its callback arrives, without recording
// exchange_started or sending its code anywhere. Starts, refreshes and
// callbacks that read the providers before the swap finish with the set
// they read.
func (e *Engine) SetProviders(ps []Provider) error {
	set, err := newProviderSet(ps)
	if err != nil {
		return fmt.Errorf("engine: set providers: %w", err)
	}
	e.provMu.Lock()
	defer e.provMu.Unlock()
	e.providers.Store(set)
	return nil
}

// AddProvider adds one provider while flows run. A name already
// configured returns an error wrapping ErrProviderExists, an invalid
// provider one wrapping ErrInvalidProvider; either changes nothing.
func (e *Engine) AddProvider(p Provider) error {
	e.provMu.Lock()
	defer e.provMu.Unlock()
	cur := e.providers.Load()
	if _, ok := cur.byName[p.Name]; ok {
		return fmt.Errorf("engine: add provider %q: %w", p.Name, ErrProviderExists)
	}
	set, err := newProviderSet(append(cur.list(), p))
	if err != nil {
		return fmt.Errorf("engine: add provider %q: %w", p.Name, err)
	}
	e.providers.Store(set)
	return nil
}

// RemoveProvider removes one provider while flows run; see SetProviders
// for what happens to its live flows. An unknown name returns an
// *UnknownProviderError and changes nothing. The provider's stored tokens
// are kept: adding it back makes them usable again.
func (e *Engine) RemoveProvider(name string) error {
	e.provMu.Lock()
	defer e.provMu.Unlock()
	cur := e.providers.Load()
	if _, ok := cur.byName[name]; !ok {
		return fmt.Errorf("engine: remove provider: %w", &UnknownProviderError{Name: name, Known: slices.Clone(cur.names)})
	}
	rest := slices.DeleteFunc(cur.list(), func(p Provider) bool { return p.Name == name })
	set, err := newProviderSet(rest)
	if err != nil { // cannot happen: every member was valid in cur
		return fmt.Errorf("engine: remove provider %q: %w", name, err)
	}
	e.providers.Store(set)
	return nil
}
