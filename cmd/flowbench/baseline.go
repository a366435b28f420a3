package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The baselines are what a user would otherwise write on bbolt: appends of
// records of the engine's record size, at the engine's concurrency, into a
// fresh database on the same disk, with nothing else (no index, no secrets,
// no state machine).

// rawDB appends fixed-size records under sequence keys.
type rawDB struct {
	db      *bolt.DB
	val     []byte
	batch   bool
	workers int

	mu  sync.Mutex
	lat []float64 // per-append latency, seconds
}

// openRaw opens a fresh baseline database at path. With batch, each append
// is one db.Batch call, and MaxBatchSize is the concurrency, so a batch
// commits as soon as every writer has joined it instead of waiting for
// MaxBatchDelay: the best plain Batch does at this concurrency. Without,
// each append is its own db.Update (its own fsync): the naive design.
func openRaw(path string, workers, size int, batch bool) (*rawDB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("baseline: open %s: %w", filepath.Base(path), err)
	}
	db.MaxBatchSize = workers
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(rawBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("baseline: create bucket: %w", err)
	}
	val := make([]byte, size)
	for i := range val {
		val[i] = 'a' + byte(i%26)
	}
	return &rawDB{db: db, val: val, batch: batch, workers: workers}, nil
}

var rawBucket = []byte("records")

func (r *rawDB) put(tx *bolt.Tx) error {
	b := tx.Bucket(rawBucket)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(u64(seq), r.val)
}

// append writes n records from r.workers goroutines and returns how long it took.
func (r *rawDB) append(ctx context.Context, n int) (time.Duration, error) {
	write := r.db.Update
	if r.batch {
		write = r.db.Batch
	}
	begin := time.Now()
	err := fanOut(ctx, r.workers, n, func(context.Context, int, int) error {
		t := time.Now()
		err := write(r.put)
		d := time.Since(t).Seconds()
		r.mu.Lock()
		r.lat = append(r.lat, d)
		r.mu.Unlock()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("baseline: append: %w", err)
	}
	return time.Since(begin), nil
}

func (r *rawDB) medianLatency() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return median(r.lat)
}

func (r *rawDB) close() error { return r.db.Close() }

// rawBatch appends n records of size bytes with workers goroutines, one
// db.Batch each, into a new database in dir, and returns records per second.
func rawBatch(ctx context.Context, dir string, workers, n, size int) (float64, error) {
	r, err := openRaw(filepath.Join(dir, "raw-batch.db"), workers, size, true)
	if err != nil {
		return 0, err
	}
	defer r.close()
	d, err := r.append(ctx, n)
	if err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}
