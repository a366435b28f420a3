package engine

import (
	"context"
	"sync"

	"github.com/flowdhq/flowd/states"
)

// connIndex knows which connections hold a stored token, and the flow of
// each, so that a Token call without an account (the daily call of an
// assistant's tools, when tokens are stored under the account the
// provider identified) and Connections read the flows of the connections
// rather than fold the whole log on every call.
//
// It is built by one scan of the log (the first caller's, or retention's,
// which folds the log anyway), then kept by the engine's own commits and,
// on a shared log, by the records the watch brings. While a scan runs, the
// changes committed meanwhile are queued and applied over its result in
// commit order, so a connect or disconnect during the scan is not lost. A
// change it cannot place (a connect observed from another engine on a flow
// this engine does not hold, a watch that lost its place) drops the index,
// and the next call scans again: correct, only slower.
type connIndex struct {
	mu    sync.Mutex
	built bool
	keys  map[TokenKey]string // connection -> the flow that stored its token
	flows map[string]TokenKey // and back
	// perStart holds the connections made with a per-start client: only
	// those have a sealed client to delete when a connect replaces them.
	perStart map[TokenKey]bool
	// scanning is closed when the scan under way ends; nil when none runs.
	scanning chan struct{}
	pending  []connChange
	// gen counts drops: a scan begun before one is not installed.
	gen uint64
}

// connChange is a connect (flow stored key's token) or a disconnect of
// flow's connection.
type connChange struct {
	key      TokenKey
	flow     string
	connect  bool
	perStart bool
}

func (x *connIndex) apply(c connChange) {
	if c.connect {
		if old, ok := x.keys[c.key]; ok {
			delete(x.flows, old)
		}
		x.keys[c.key], x.flows[c.flow] = c.flow, c.key
		if c.perStart {
			x.perStart[c.key] = true
		} else {
			delete(x.perStart, c.key)
		}
		return
	}
	if key, ok := x.flows[c.flow]; ok {
		delete(x.flows, c.flow)
		if x.keys[key] == c.flow {
			delete(x.keys, key)
			delete(x.perStart, key)
		}
	}
}

// changes lists what recs, committed on the flow that became f, change.
func changes(f states.Flow, recs []states.Record) []connChange {
	var out []connChange
	for i := range recs {
		switch recs[i].Event {
		case states.ExchangeSucceeded:
			if recs[i].Data.TokenStored {
				out = append(out, connChange{key: TokenKey{Provider: f.Provider, Account: f.Account}, flow: f.ID, connect: true,
					perStart: f.Registration == RegisteredPerStart})
			}
		case states.Disconnected:
			out = append(out, connChange{flow: recs[i].Flow})
		}
	}
	return out
}

// touchesConnection reports whether recs connect or disconnect: only
// those change the index, so the watch path copies a flow for no other.
func touchesConnection(recs []states.Record) bool {
	for i := range recs {
		if recs[i].Event == states.ExchangeSucceeded || recs[i].Event == states.Disconnected {
			return true
		}
	}
	return false
}

// committed notes the changes of records this engine appended.
func (x *connIndex) committed(f states.Flow, recs []states.Record) {
	cs := changes(f, recs)
	if len(cs) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built && x.scanning == nil {
		return // the next scan reads them from the log
	}
	for _, c := range cs {
		x.note(c)
	}
}

// observed notes records of an append on a shared log (any writer's).
// held is the flow as this engine holds it after the records, if it does.
func (x *connIndex) observed(recs []states.Record, held *states.Flow) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built && x.scanning == nil {
		return
	}
	for i := range recs {
		switch recs[i].Event {
		case states.ExchangeSucceeded:
			if !recs[i].Data.TokenStored {
				continue
			}
			if _, known := x.flows[recs[i].Flow]; known && x.built {
				continue // this engine's own connect, noted at its commit
			}
			if held == nil {
				x.dropLocked()
				return
			}
			c := connChange{key: TokenKey{Provider: held.Provider, Account: held.Account}, flow: held.ID, connect: true,
				perStart: held.Registration == RegisteredPerStart}
			x.note(c)
		case states.Disconnected:
			x.note(connChange{flow: recs[i].Flow})
		}
	}
}

// note applies c to the index when it is built, and queues it behind the
// scan under way when one runs: retention rebuilds a built index, and the
// scan's result replaces the maps c was applied to.
func (x *connIndex) note(c connChange) {
	if x.built {
		x.apply(c)
	}
	if x.scanning != nil {
		x.pending = append(x.pending, c)
	}
}

// mayHoldClient reports whether key's connection may have a sealed
// per-start client: false only when the index is built and says its
// connection (if any) was made with the configured client. A connect that
// replaces it skips deleting a client that is not there, a B-tree search
// inside the group commit.
func (x *connIndex) mayHoldClient(key TokenKey) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.built || x.perStart[key]
}

// drop forgets the index: the next call scans the log.
func (x *connIndex) drop() {
	x.mu.Lock()
	x.dropLocked()
	x.mu.Unlock()
}

func (x *connIndex) dropLocked() {
	x.built, x.keys, x.flows, x.perStart, x.pending = false, nil, nil, nil, nil
	x.gen++
}

// snapshot returns the key and flow of every connection, or of
// provider's only when provider is not "", scanning the log with scan when
// the index is not built (one scan at a time: others wait for it).
func (x *connIndex) snapshot(ctx context.Context, provider string, scan func(context.Context) ([]states.Connection, error)) (map[TokenKey]string, error) {
	for {
		x.mu.Lock()
		if x.built {
			out := map[TokenKey]string{}
			for k, f := range x.keys {
				if provider == "" || k.Provider == provider {
					out[k] = f
				}
			}
			x.mu.Unlock()
			return out, nil
		}
		if wait := x.scanning; wait != nil {
			x.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		x.mu.Unlock()
		conns, err := x.rebuild(ctx, scan)
		if err != nil {
			return nil, err
		}
		out := map[TokenKey]string{}
		for _, c := range conns {
			if provider == "" || c.Provider == provider {
				out[TokenKey{Provider: c.Provider, Account: c.Account}] = c.Flow
			}
		}
		return out, nil
	}
}

// rebuild scans the log and, unless the index was dropped meanwhile,
// installs what it found with the changes committed during the scan. It
// returns the scan's connections.
func (x *connIndex) rebuild(ctx context.Context, scan func(context.Context) ([]states.Connection, error)) ([]states.Connection, error) {
	x.mu.Lock()
	if x.scanning != nil {
		// Another scan is under way: this one's result is as good; do not
		// install either over the other's queue.
		x.mu.Unlock()
		return scan(ctx)
	}
	done := make(chan struct{})
	x.scanning, x.pending = done, nil
	gen := x.gen
	x.mu.Unlock()

	conns, err := scan(ctx)

	x.mu.Lock()
	defer x.mu.Unlock()
	x.scanning = nil
	close(done)
	if err != nil || gen != x.gen {
		x.pending = nil
		return conns, err
	}
	x.keys, x.flows, x.perStart = make(map[TokenKey]string, len(conns)), make(map[string]TokenKey, len(conns)), map[TokenKey]bool{}
	for _, c := range conns {
		x.apply(connChange{key: TokenKey{Provider: c.Provider, Account: c.Account}, flow: c.Flow, connect: true,
			perStart: c.Registration == RegisteredPerStart})
	}
	for _, c := range x.pending {
		x.apply(c)
	}
	x.pending, x.built = nil, true
	return conns, nil
}
