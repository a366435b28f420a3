package persist

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// secretIndex maps each flow secret's name to its number, the key it is
// stored under in the flowsecrets bucket. Flow secrets are the secrets
// created with a flow's first records (its PKCE verifier): numbered in
// creation order, they are written at the tail of their bucket and mostly
// deleted near it, when their flow ends, where a bucket keyed by a name
// like verifier/<random state> took a random page for each. The index
// lives in memory (rebuilt at open from the bucket, whose values carry
// their names): an index on disk keyed by name would bring the random page
// back. Its size grows with the flow secrets stored (about the live flows),
// not with the log. Other secrets (tokens) are kept by name in the secrets
// bucket; a name that is not in this index is looked up there.
//
// Only the committer changes it, through a pending overlay that a write
// transaction builds and that is applied once that transaction committed
// (or dropped if it rolled back). A name only moves to another number
// after a commit in which it was absent, and numbers are never reused, so
// a reader that finds number n for a name and then reads key n in a later
// snapshot either finds that name's value there or nothing, which means
// it was deleted in between.
type secretIndex struct {
	mu    sync.RWMutex
	names map[string]uint64

	// pending is the open write transaction's changes: the name's number
	// (0 for a secret kept by name) and whether it is present. Only the
	// committer touches it.
	pending map[string]pendingSecret
}

type pendingSecret struct {
	num     uint64
	present bool
}

// load reads every secret's name. It runs before the log serves anything.
func (s *secretIndex) load(b *bolt.Bucket) error {
	names := map[string]uint64{}
	err := b.ForEach(func(k, v []byte) error {
		num := decodeSeq(k)
		name, _, ok := decodeSecret(v)
		if num == 0 || !ok {
			return fmt.Errorf("%w: secret number %x is unreadable (%d bytes)", ErrCorrupt, k, len(v))
		}
		if other, dup := names[name]; dup {
			return fmt.Errorf("%w: secret %q stored twice, as numbers %d and %d", ErrCorrupt, name, other, num)
		}
		names[name] = num
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.names = names
	s.mu.Unlock()
	return nil
}

// lookup returns the number a reader should read name under, 0 if none.
func (s *secretIndex) lookup(name string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.names[name]
}

// begin starts a write transaction's overlay.
func (s *secretIndex) begin() { clear(s.pending) }

// settle applies the overlay after a commit, or drops it after a rollback.
func (s *secretIndex) settle(committed bool) {
	if committed && len(s.pending) > 0 {
		s.mu.Lock()
		for name, p := range s.pending {
			if p.num == 0 {
				continue // kept by name: not indexed
			}
			if p.present {
				s.names[name] = p.num
			} else {
				delete(s.names, name)
			}
		}
		s.mu.Unlock()
	}
	clear(s.pending)
}

// set writes sealed under name in the open write transaction, or deletes
// name when sealed is nil. A new name goes to the flow secrets if newFlow
// (it is written with a flow's first records), else to the secrets kept by
// name. A name stays in its bucket and under its number until a commit
// deletes it, even if it is deleted and written again within one
// transaction: a reader that looked it up before the commit finds it where
// it looked, or finds it deleted.
func (s *secretIndex) set(b tx, name string, sealed []byte, newFlow bool) error {
	p, inTx := s.pending[name]
	if !inTx {
		p = pendingSecret{num: s.lookup(name), present: true}
		// Whether a secret kept by name is there matters only to delete
		// it or to number a new flow secret: a plain write (a token's)
		// skips the lookup, one B-tree search inside the group commit.
		if p.num == 0 && (sealed == nil || newFlow) {
			p.present = b.secrets.Get([]byte(name)) != nil
			if !p.present && sealed != nil && newFlow {
				var err error
				if p.num, err = b.flowSecrets.NextSequence(); err != nil {
					return fmt.Errorf("number secret %q: %w", name, err)
				}
			}
		}
	}
	var err error
	switch {
	case sealed == nil && !p.present:
		return nil
	case sealed == nil && p.num != 0:
		err = b.flowSecrets.Delete(encodeSeq(p.num))
	case sealed == nil:
		err = b.secrets.Delete([]byte(name))
	case p.num != 0:
		err = b.flowSecrets.Put(encodeSeq(p.num), encodeSecret(name, sealed))
	default:
		err = b.secrets.Put([]byte(name), sealed)
	}
	if err != nil {
		return err
	}
	s.pending[name] = pendingSecret{num: p.num, present: sealed != nil}
	return nil
}
