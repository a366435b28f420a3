package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketBytes says where a closed bbolt file's bytes are: the pages each
// top-level bucket allocates, and the free pages, per event. It is the
// evidence behind item 5's figure; it reads the file only.
func bucketBytes(path string, events float64) (string, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second, PreLoadFreelist: true})
	if err != nil {
		return "", fmt.Errorf("open %s to measure its buckets: %w", path, err)
	}
	defer db.Close()
	type share struct {
		name  string
		bytes float64
	}
	var shares []share
	var highWater float64
	err = db.View(func(tx *bolt.Tx) error {
		highWater = float64(tx.Size())
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			shares = append(shares, share{string(name), float64(s.BranchAlloc + s.LeafAlloc)})
			return nil
		})
	})
	if err != nil {
		return "", fmt.Errorf("measure the buckets of %s: %w", path, err)
	}
	st := db.Stats()
	shares = append(shares, share{"free pages", float64((st.FreePageN + st.PendingPageN) * db.Info().PageSize)})
	sort.Slice(shares, func(i, j int) bool { return shares[i].bytes > shares[j].bytes })
	var parts []string
	for _, s := range shares {
		if s.bytes > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", s.name, s.bytes/events))
		}
	}
	return fmt.Sprintf("pages up to the high-water mark %.0f: %s (%d free pages)", highWater/events, strings.Join(parts, ", "), st.FreePageN+st.PendingPageN), nil
}
