package persist

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// secretIndex maps each secret's name to its number, the key it is stored
// under in the secrets bucket. It lives in memory (rebuilt at open from the
// bucket, whose values carry their names): an index on disk keyed by name
// would put one random page in every commit that writes a verifier, which
// is what the numbering avoids. Its size grows with the secrets stored
// (live flows' verifiers and tokens), not with the log.
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
	// and whether it is present. Only the committer touches it.
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

// put stores sealed under name in the open write transaction.
func (s *secretIndex) put(b *bolt.Bucket, name string, sealed []byte) error {
	p, ok := s.pending[name]
	if !ok {
		p.num = s.lookup(name)
	}
	// A name deleted earlier in this transaction keeps its number, so it
	// never moves while present (see secretIndex).
	if p.num == 0 {
		var err error
		if p.num, err = b.NextSequence(); err != nil {
			return fmt.Errorf("number secret %q: %w", name, err)
		}
	}
	if err := b.Put(encodeSeq(p.num), encodeSecret(name, sealed)); err != nil {
		return err
	}
	s.pending[name] = pendingSecret{num: p.num, present: true}
	return nil
}

// del deletes name in the open write transaction, if it is there.
func (s *secretIndex) del(b *bolt.Bucket, name string) error {
	p, ok := s.pending[name]
	if !ok {
		p = pendingSecret{num: s.lookup(name), present: true}
	}
	if p.num == 0 || !p.present {
		return nil
	}
	if err := b.Delete(encodeSeq(p.num)); err != nil {
		return err
	}
	s.pending[name] = pendingSecret{num: p.num, present: false}
	return nil
}
