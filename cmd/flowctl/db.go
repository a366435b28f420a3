package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// logReader is the read side of flowd's event log that inspect --db needs.
type logReader interface {
	History(ctx context.Context, flow string) ([]states.Record, error)
	Scan(ctx context.Context, after uint64, fn func(states.Record) error) error
	io.Closer
}

// openDB opens a database file read-only. It returns an error wrapping
// errDBHeld when a running flowd holds the file. Tests replace it.
var openDB = func(path string) (logReader, error) {
	db, err := persist.Open(path, persist.Options{ReadOnly: true, Timeout: dbOpenTimeout})
	if errors.Is(err, persist.ErrLocked) {
		return nil, fmt.Errorf("%w: %w", errDBHeld, err)
	}
	if err != nil {
		return nil, err
	}
	return db, nil
}

func (a *app) historyFromDB(ctx context.Context, path, arg string) ([]states.Record, error) {
	state, err := stateFromArg(arg)
	if err != nil {
		return nil, err
	}
	db, err := openDB(path)
	if err != nil {
		if errors.Is(err, errDBHeld) {
			return nil, fmt.Errorf("flowd is running and holds %s, so it cannot be read directly: drop --db and flowctl asks flowd instead", path)
		}
		return nil, fmt.Errorf("inspect --db %s: %w", path, err)
	}
	defer db.Close()
	recs, err := db.History(ctx, state)
	if err != nil {
		return nil, fmt.Errorf("read flow %s from %s: %w", state, path, err)
	}
	if len(recs) > 0 {
		return recs, nil
	}
	// Not a whole state: take it for a prefix. The file has no index of
	// flow ids, so walk the log once.
	seen := map[string]bool{}
	var ids []string
	err = db.Scan(ctx, 0, func(r states.Record) error {
		if !seen[r.Flow] && len(r.Flow) >= len(state) && r.Flow[:len(state)] == state {
			seen[r.Flow] = true
			ids = append(ids, r.Flow)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s for flows starting with %q: %w", path, state, err)
	}
	full, err := pickPrefix(state, ids, func(w io.Writer) {
		for _, id := range ids {
			fmt.Fprintln(w, "  "+id)
		}
	})
	if errors.Is(err, errNoMatch) {
		return nil, fmt.Errorf("no flow in %s has state %q or starts with it (finished flows are pruned after the retention period)", path, state)
	}
	if err != nil {
		return nil, err
	}
	recs, err = db.History(ctx, full)
	if err != nil {
		return nil, fmt.Errorf("read flow %s from %s: %w", full, path, err)
	}
	return recs, nil
}
