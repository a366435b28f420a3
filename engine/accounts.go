package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrAccountRequired: the provider has several connected accounts and the
// call named none. The error is an *AccountRequiredError listing them.
var ErrAccountRequired = errors.New("several accounts are connected")

// AccountRequiredError is returned by Token and Disconnect for a key
// without an account when the provider holds tokens of several accounts:
// which one is meant cannot be guessed.
type AccountRequiredError struct {
	Provider string
	// Accounts are the provider's connected accounts, sorted.
	Accounts []string
}

func (e *AccountRequiredError) Error() string {
	return fmt.Sprintf("%s has %d connected accounts (%s); name one", e.Provider, len(e.Accounts), strings.Join(e.Accounts, ", "))
}

// Is makes errors.Is(err, ErrAccountRequired) true.
func (e *AccountRequiredError) Is(target error) bool { return target == ErrAccountRequired }

// Accounts lists the accounts of provider that hold a stored token,
// sorted; "" is the token stored under no account name. The accounts
// are those of its connections, from the engine's index of them: the
// first call after Open folds the log once to build it.
func (e *Engine) Accounts(ctx context.Context, provider string) ([]string, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	if _, err := e.provider(provider); err != nil {
		return nil, err
	}
	return e.accounts(ctx, provider)
}

func (e *Engine) accounts(ctx context.Context, provider string) ([]string, error) {
	index, err := e.conns.snapshot(ctx, provider, e.scanConnections)
	if err != nil {
		return nil, fmt.Errorf("accounts of %s: %w", provider, err)
	}
	var out []string
	for key := range index {
		// A token store other than the log's may have lost a token
		// behind the log's back: only those it still holds count.
		if key.Provider != provider {
			continue
		}
		if _, err := e.tokens.LoadToken(ctx, key); err == nil {
			out = append(out, key.Account)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ResolveAccount returns key with the account a key without one means:
// the token stored under no account name if there is one, else the
// provider's only connected account. Several give an
// *AccountRequiredError, none an error wrapping ErrNoToken. Token and
// Disconnect resolve keys themselves; this tells a caller which
// account they will use.
func (e *Engine) ResolveAccount(ctx context.Context, key TokenKey) (TokenKey, error) {
	if err := e.enter(); err != nil {
		return key, err
	}
	defer e.inflight.Done()
	p, err := e.resolve(ctx, key.Provider)
	if err != nil {
		return key, err
	}
	key.Provider = p.Name // an MCP server's canonical URL; a provider's own name otherwise
	return e.resolveAccount(ctx, key)
}

// resolveAccount names the account a key without one means: the token stored
// under no account name if there is one, else the provider's only
// connected account. Several give an *AccountRequiredError, none an error
// wrapping ErrNoToken.
func (e *Engine) resolveAccount(ctx context.Context, key TokenKey) (TokenKey, error) {
	if key.Account != "" {
		return key, nil
	}
	_, missing := e.tokens.LoadToken(ctx, key)
	if missing == nil || !errors.Is(missing, ErrNoToken) {
		return key, missing
	}
	accounts, err := e.accounts(ctx, key.Provider)
	if err != nil {
		return key, err
	}
	switch len(accounts) {
	case 0:
		return key, missing
	case 1:
		key.Account = accounts[0]
		return key, nil
	}
	return key, &AccountRequiredError{Provider: key.Provider, Accounts: accounts}
}
