package bolt

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

// maxBatch bounds how many functions share one commit.
const maxBatch = 1000

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("store closed")

type op struct {
	fn   func(storage.Tx) error
	err  error
	done chan struct{}
}

// committer runs Update functions in batches: it starts the next commit as
// soon as the previous one is durable, so under load every commit carries
// everything that queued meanwhile, and an idle store commits at once.
// (bbolt's Batch waits for a timer before each commit instead.)
type committer struct {
	db      *bbolt.DB
	ops     chan *op
	mu      sync.RWMutex
	closed  bool
	wg      sync.WaitGroup
	commits atomic.Int64
	// latency observes each commit's duration; nil when unset.
	latency atomic.Pointer[func(time.Duration)]
	// fail, when set, makes every commit fail: a test failpoint for a full
	// or broken disk.
	fail atomic.Pointer[error]
}

func newCommitter(db *bbolt.DB) *committer {
	c := &committer{db: db, ops: make(chan *op, maxBatch)}
	c.wg.Add(1)
	go c.loop()
	return c
}

func (c *committer) submit(fn func(storage.Tx) error) error {
	o := &op{fn: fn, done: make(chan struct{})}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	c.ops <- o
	c.mu.RUnlock()
	<-o.done
	return o.err
}

func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.ops)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *committer) loop() {
	defer c.wg.Done()
	batch := make([]*op, 0, maxBatch)
	for o := range c.ops {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-c.ops:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		c.run(batch)
		for _, o := range batch {
			close(o.done)
		}
	}
}

// failedAt reports the index of a function that failed after writing, which
// spoils the whole transaction.
type failedAt int

func (f failedAt) Error() string {
	return fmt.Sprintf("batch function %d failed after writing", int(f))
}

// run commits batch. A function that returns an error before writing
// anything just gets its error; one that fails after writing forces a
// rollback, and is then run alone while the others are retried.
func (c *committer) run(batch []*op) {
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	err := c.db.Update(func(btx *bbolt.Tx) error {
		if f := c.fail.Load(); f != nil {
			return *f
		}
		for i, o := range batch {
			t := &tx{tx: btx, writable: true}
			o.err = o.fn(t)
			if o.err != nil && t.dirty {
				return failedAt(i)
			}
		}
		return nil
	})
	var fa failedAt
	switch {
	case errors.As(err, &fa):
		i := int(fa)
		if len(batch) == 1 {
			// Alone and still failing: its own error stands, nothing was
			// committed.
			return
		}
		c.run(batch[i : i+1])
		rest := append(append([]*op(nil), batch[:i]...), batch[i+1:]...)
		c.run(rest)
		return
	case err != nil:
		for _, o := range batch {
			o.err = fmt.Errorf("%w: commit: %v", imqtt.ErrInternal, err)
		}
		return
	}
	c.commits.Add(1)
	if f := c.latency.Load(); f != nil {
		(*f)(time.Since(start))
	}
}

// View implements storage.Transactor.
func (d *DB) View(fn func(storage.Tx) error) error {
	return d.db.View(func(btx *bbolt.Tx) error { return fn(&tx{tx: btx}) })
}

// Update implements storage.Transactor: fn runs inside a group commit and
// Update returns once that commit is durable (or failed).
func (d *DB) Update(fn func(storage.Tx) error) error {
	return d.commit.submit(fn)
}

// Commits returns how many commits the committer has made.
func (d *DB) Commits() int64 { return d.commit.commits.Load() }

// ObserveCommits sets a function called with every commit's duration.
func (d *DB) ObserveCommits(f func(time.Duration)) { d.commit.latency.Store(&f) }

// FailCommits makes every commit fail with err until called with nil: a
// failpoint for tests of a full or failing disk.
func (d *DB) FailCommits(err error) {
	if err == nil {
		d.commit.fail.Store(nil)
		return
	}
	d.commit.fail.Store(&err)
	// A barrier: a commit already under way when the failpoint was set
	// finishes before this returns, so every commit after it fails.
	_ = d.commit.submit(func(storage.Tx) error { return nil })
}

// ReadStream implements storage.Streams.
func (d *DB) ReadStream(user string, after uint64, max int, dst []storage.Entry) ([]storage.Entry, error) {
	dst = dst[:0]
	err := d.db.View(func(btx *bbolt.Tx) error {
		s := btx.Bucket(bucketStreams).Bucket([]byte(user))
		if s == nil {
			return nil
		}
		t := &tx{tx: btx}
		c := s.Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(dst) < max; k, v = c.Next() {
			e, err := t.decodeEntry(beU64(k), v)
			if err != nil {
				return err
			}
			dst = append(dst, e)
		}
		return nil
	})
	if err != nil {
		return dst, fmt.Errorf("read stream of %s: %w", user, err)
	}
	return dst, nil
}

// StreamHead implements storage.Streams.
func (d *DB) StreamHead(user string) (uint64, error) {
	var head uint64
	err := d.db.View(func(btx *bbolt.Tx) error {
		if s := btx.Bucket(bucketStreams).Bucket([]byte(user)); s != nil {
			head = s.Sequence()
		}
		return nil
	})
	return head, err
}

// Cursor implements storage.Streams.
func (d *DB) Cursor(clientID string) (uint64, error) {
	var pos uint64
	err := d.db.View(func(btx *bbolt.Tx) error {
		if v := btx.Bucket(bucketCursors).Get([]byte(clientID)); len(v) == 8 {
			pos = beU64(v)
		}
		return nil
	})
	return pos, err
}

// SaveCursors implements storage.Streams. Cursors only move forward, and
// only for devices still bound. Entries every device of the user has
// acknowledged are deleted in the same commit: streams of users who keep up
// stay a few entries long, small enough for bbolt to keep them inline in
// their parent page, which makes every append cheaper.
func (d *DB) SaveCursors(cursors map[string]uint64) error {
	return d.Update(func(t storage.Tx) error {
		b := t.(*tx)
		cb := b.tx.Bucket(bucketCursors)
		users := map[string]bool{}
		for id, pos := range cursors {
			v := cb.Get([]byte(id))
			if v == nil || len(v) == 8 && beU64(v) >= pos {
				continue
			}
			b.dirty = true
			if err := cb.Put([]byte(id), u64(pos)); err != nil {
				return err
			}
			if dv := b.tx.Bucket(bucketDevices).Get([]byte(id)); dv != nil {
				var r deviceRec
				if json.Unmarshal(dv, &r) == nil {
					users[r.User] = true
				}
			}
		}
		for u := range users {
			s := b.tx.Bucket(bucketStreams).Bucket([]byte(u))
			if s == nil {
				continue
			}
			if _, err := pruneStream(b, s, b.minCursor(u, s.Sequence()), 0); err != nil {
				return err
			}
		}
		return nil
	})
}

func beU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
