package persist_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/flowdhq/flowd/engine/logtest"
	"github.com/flowdhq/flowd/persist"
	"github.com/flowdhq/flowd/states"
)

// runWriters runs fn from about writers goroutines for b.N calls in all
// and reports appends per second. Each goroutine gets its own setup value.
func runWriters[T any](b *testing.B, writers int, setup func() T, fn func(T) error) {
	b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := setup()
		for pb.Next() {
			if err := fn(s); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// benchFlow opens a flow for one writer. Its records are typical ones:
// callbacks ignored on a waiting flow (the one event a flow may repeat, so
// a writer can append it forever).
func benchFlow(b *testing.B, db *persist.DB) *logtest.Flow {
	f := logtest.NewFlow(logtest.Base)
	require.NoError(b, db.Append(bg, []states.Record{f.Created(), f.URLIssued()}, nil))
	return f
}

func recordSize(b testing.TB) int {
	f := logtest.NewFlow(logtest.Base)
	f.Created()
	f.URLIssued()
	r := f.Ignored()
	r.Seq = 123456
	v, err := r.Encode()
	require.NoError(b, err)
	return len(v)
}

// BenchmarkAppend compares DB.Append under 64 (a busy daemon) and 8
// concurrent writers with raw bbolt doing the same writes: DB.Batch with
// same-size records (bbolt's own group commit, with MaxBatchSize 64 and its
// default 10ms MaxBatchDelay), and one DB.Update, so one fsync, per record
// (a log without group commit). Serial is one writer through DB.Append:
// the rate of an append that has no company.
func BenchmarkAppend(b *testing.B) {
	value := make([]byte, recordSize(b))
	rawDB := func(b *testing.B) *bolt.DB {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
		require.NoError(b, err)
		b.Cleanup(func() { db.Close() })
		db.MaxBatchSize = 64
		require.NoError(b, db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("events"))
			return err
		}))
		return db
	}
	put := func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("events"))
		bk.FillPercent = 1.0
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		return bk.Put(seqKey(seq), value)
	}
	none := func() struct{} { return struct{}{} }

	for _, w := range []int{64, 8} {
		b.Run(fmt.Sprintf("DB.Append/%dwriters", w), func(b *testing.B) {
			db := newDB(b)
			runWriters(b, w, func() *logtest.Flow { return benchFlow(b, db) }, func(f *logtest.Flow) error {
				return db.Append(bg, []states.Record{f.Ignored()}, nil)
			})
		})
		b.Run(fmt.Sprintf("bbolt.Batch/%dwriters", w), func(b *testing.B) {
			db := rawDB(b)
			runWriters(b, w, none, func(struct{}) error { return db.Batch(put) })
		})
		b.Run(fmt.Sprintf("bbolt.Update/%dwriters", w), func(b *testing.B) {
			db := rawDB(b)
			runWriters(b, w, none, func(struct{}) error { return db.Update(put) })
		})
	}

	b.Run("DB.Append/serial", func(b *testing.B) {
		db := newDB(b)
		f := benchFlow(b, db)
		for b.Loop() {
			if err := db.Append(bg, []states.Record{f.Ignored()}, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	})
}
