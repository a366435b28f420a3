package persist

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// committer is the log's group commit. Writers queue their transaction
// functions; whoever finds no commit under way leads: it takes everything
// queued (up to maxBatch) and runs it in one bbolt transaction, one fsync,
// then hands the lead to the first writer that queued meanwhile. A lone
// append therefore commits at once, and under load each commit carries
// every append that arrived during the previous commit.
//
// The leader keeps taking what queues while it runs the functions, and
// when the queue is empty it yields the processor (up to drainYields
// times) before committing: writers the previous commit released are
// runnable but, on a machine with few cores, mostly have not run yet.
// Yielding once before the transaction instead (as this did first) left
// the leader waiting its turn in the run queue with nothing to do; taking
// them inside the transaction overlaps their work with the functions and
// carries ~55 appends per commit instead of ~40 in the engine benchmark
// (docs/storage.md).
//
// bbolt's DB.Batch does the same grouping but starts each batch with a
// timer: every batch that does not fill MaxBatchSize waits out
// MaxBatchDelay, so moderate concurrency (a few writers) pays the delay on
// every append. See docs/storage.md for the measurements.
//
// Like DB.Batch, a function may run more than once: when one fails, the
// transaction rolls back, the rest run again without it, and it runs alone
// to get its own error. Functions must only read and write the database.
type committer struct {
	db       *bolt.DB
	maxBatch int
	linger   time.Duration
	// begin, when set, runs at the start of every write transaction, and
	// settle after it, told whether it committed: they keep state derived
	// from the database (the secret index) in step with what committed.
	begin  func(*bolt.Tx)
	settle func(committed bool)
	// maintain, when set, is asked before each commit for a function to
	// run first in it (a checkpoint of the id index), or nil.
	maintain func() func(*bolt.Tx) error
	// fault, when set, fails every write transaction at its commit, as a
	// disk that refuses the write does; tests set it (export_test.go).
	fault atomic.Pointer[error]

	mu      sync.Mutex
	queue   []*commitReq
	leading bool // a leader is committing, or the lead is being handed over

	// commits and committed count the transactions committed and the
	// requests they carried (maintenance left out), for Stats.
	commits, committed atomic.Uint64
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	done chan error // buffered: the result, or errLead
	// maintenance is the committer's own (a checkpoint): not counted.
	maintenance bool
}

// errLead tells a queued writer it now leads.
var errLead = errors.New("persist: lead the next commit")

// do runs fn in a shared write transaction and returns once it is
// committed (durable unless NoSync), with fn's error or the commit's.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	req := &commitReq{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, req)
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()
	if lead {
		c.lead()
	}
	for {
		err := <-req.done
		if err != errLead {
			return err
		}
		c.lead()
	}
}

// lead runs one commit and passes the lead on.
func (c *committer) lead() {
	if c.linger > 0 {
		c.mu.Lock()
		short := len(c.queue) < c.maxBatch
		c.mu.Unlock()
		if short {
			time.Sleep(c.linger)
		}
	}
	batch := c.take(nil, c.maxBatch)

	if c.maintain != nil {
		if fn := c.maintain(); fn != nil {
			// Nobody waits for its result: if it fails, it is due again
			// at the next commit.
			batch = append([]*commitReq{{fn: fn, done: make(chan error, 1), maintenance: true}}, batch...)
		}
	}
	c.run(batch)

	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].done <- errLead
	} else {
		c.leading = false
	}
	c.mu.Unlock()
}

// drainYields is how many times a leader that finds the queue empty
// yields the processor before committing. Measured on 2 cores (the
// engine benchmark, 64 writers): 0 carried ~35 appends per commit, 1
// ~48, 2 ~55, 4 no more than 2. A lone writer pays two yields that
// return at once.
const drainYields = 2

// take appends to batch up to max-len(batch) queued requests.
func (c *committer) take(batch []*commitReq, max int) []*commitReq {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(c.queue), max-len(batch))
	if n <= 0 {
		return batch
	}
	batch = append(batch, c.queue[:n]...)
	c.queue = slices.Delete(c.queue, 0, n)
	return batch
}

// run commits batch, and whatever queues while its functions run, in one
// transaction, taking out functions that fail.
func (c *committer) run(batch []*commitReq) {
	for len(batch) > 0 {
		failed := -1
		err := c.update(func(tx *bolt.Tx) error {
			c.began(tx)
			yields := 0
			for i := 0; ; i++ {
				if i == len(batch) {
					batch = c.take(batch, c.maxBatch)
					for i == len(batch) && yields < drainYields {
						yields++
						runtime.Gosched()
						batch = c.take(batch, c.maxBatch)
					}
					if i == len(batch) {
						return nil
					}
				}
				if err := safeCall(batch[i].fn, tx); err != nil {
					failed = i
					return err
				}
			}
		})
		c.settled(err == nil)
		if failed < 0 {
			if err == nil {
				c.counted(batch)
			}
			for _, r := range batch {
				r.done <- err
			}
			return
		}
		r := batch[failed]
		batch = slices.Delete(batch, failed, failed+1)
		err = c.update(func(tx *bolt.Tx) error {
			c.began(tx)
			return safeCall(r.fn, tx)
		})
		c.settled(err == nil)
		if err == nil {
			c.counted([]*commitReq{r})
		}
		r.done <- err
	}
}

// counted adds a committed transaction that carried batch to the stats.
func (c *committer) counted(batch []*commitReq) {
	n := 0
	for _, r := range batch {
		if !r.maintenance {
			n++
		}
	}
	c.commits.Add(1)
	c.committed.Add(uint64(n))
}

func (c *committer) began(tx *bolt.Tx) {
	if c.begin != nil {
		c.begin(tx)
	}
}

func (c *committer) settled(committed bool) {
	if c.settle != nil {
		c.settle(committed)
	}
}

func (c *committer) update(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // see openBolt
	defer recoverCorrupt(&err)
	return classify(c.db.Update(c.faulty(fn)))
}

// faulty returns fn, made to fail after it ran when a fault is set, so the
// transaction rolls back as one whose commit could not be written does.
func (c *committer) faulty(fn func(*bolt.Tx) error) func(*bolt.Tx) error {
	if c.fault.Load() == nil {
		return fn
	}
	return func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if f := c.fault.Load(); f != nil {
			return *f
		}
		return nil
	}
}

// safeCall runs fn, turning a panic (bbolt panics on some damaged pages)
// into an error so one bad append does not take the batch down.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt: %v", ErrCorrupt, r)
		}
	}()
	return fn(tx)
}
