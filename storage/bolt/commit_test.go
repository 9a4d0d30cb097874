package bolt

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

// cmtOpen opens a store in a temporary directory and, when the test ends,
// checks the file's consistency and closes it.
func cmtOpen(t *testing.T) *DB {
	t.Helper()
	db, err := OpenDir(t.TempDir(), Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("check: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

// cmtAppend stores one message in conv, as a function given to Update.
func cmtAppend(conv imqtt.ConvID, sender, id string) func(storage.Tx) error {
	return func(tx storage.Tx) error {
		_, err := tx.AppendMessage(conv, sender, id, 0, func(seq uint64) []byte {
			return []byte(fmt.Sprintf(`{"seq":%d,"id":%q}`, seq, id))
		})
		return err
	}
}

// cmtLastSeq returns conv's last seq, checking that the log holds exactly
// that many messages (seqs are gapless, so a rolled-back append must leave
// neither a message nor a used seq behind).
func cmtLastSeq(t *testing.T, db *DB, conv imqtt.ConvID) uint64 {
	t.Helper()
	var seq uint64
	var n int
	err := db.db.View(func(btx *bbolt.Tx) error {
		b := btx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		seq = b.Sequence()
		return b.ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatalf("last seq of %s: %v", conv, err)
	}
	if uint64(n) != seq {
		t.Fatalf("%s: last seq %d but %d messages", conv, seq, n)
	}
	return seq
}

// cmtHold blocks the committer inside a commit until the returned release is
// called, so that the functions submitted meanwhile queue up and then share
// the next batch. It returns once the committer is blocked.
func cmtHold(t *testing.T, db *DB) (release func() error) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.Update(func(storage.Tx) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	var once sync.Once
	var err error
	release = func() error {
		once.Do(func() { close(unblock); err = <-done })
		return err
	}
	// A test that fails while holding must not leave Close waiting.
	t.Cleanup(func() { _ = release() })
	return release
}

// cmtWaitQueued waits until n functions wait in the committer's queue.
func cmtWaitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(db.commit.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d functions queued, want %d", len(db.commit.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// cmtBatch submits fns while the committer is held, so that they form one
// batch in this order, and returns each one's Update result.
func cmtBatch(t *testing.T, db *DB, fns ...func(storage.Tx) error) []error {
	t.Helper()
	release := cmtHold(t, db)
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(fn)
		}()
		// One at a time, so that the queue order is the order of fns.
		cmtWaitQueued(t, db, i+1)
	}
	if err := release(); err != nil {
		t.Fatalf("holding commit: %v", err)
	}
	wg.Wait()
	return errs
}

func TestCommitterConcurrentUpdatesShareCommits(t *testing.T) {
	db := cmtOpen(t)
	const writers, each = 50, 20
	before := db.Commits()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := imqtt.DMConv(fmt.Sprintf("w%02d", w), "z")
			for i := range each {
				if err := db.Update(cmtAppend(conv, "z", fmt.Sprintf("m%d", i))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("update: %v", err)
	}
	for w := range writers {
		conv := imqtt.DMConv(fmt.Sprintf("w%02d", w), "z")
		if got := cmtLastSeq(t, db, conv); got != each {
			t.Errorf("%s: last seq %d, want %d", conv, got, each)
		}
	}
	commits := db.Commits() - before
	t.Logf("%d updates in %d commits", writers*each, commits)
	if commits <= 0 || commits >= writers*each {
		t.Errorf("%d updates took %d commits; want at least 1 and fewer than %d (group commit)", writers*each, commits, writers*each)
	}
}

func TestCommitterBatchSharesOneCommit(t *testing.T) {
	db := cmtOpen(t)
	before := db.Commits()
	var fns []func(storage.Tx) error
	for i := range 10 {
		fns = append(fns, cmtAppend(imqtt.DMConv("a", "b"), "a", fmt.Sprintf("m%d", i)))
	}
	for i, err := range cmtBatch(t, db, fns...) {
		if err != nil {
			t.Errorf("update %d: %v", i, err)
		}
	}
	// The holding function's commit, then one for the whole batch.
	if got := db.Commits() - before; got != 2 {
		t.Errorf("commits: %d, want 2", got)
	}
	if got := cmtLastSeq(t, db, imqtt.DMConv("a", "b")); got != 10 {
		t.Errorf("last seq %d, want 10", got)
	}
}

var errCmtRefused = errors.New("refused by the test")

func TestCommitterErrorBeforeWriting(t *testing.T) {
	db := cmtOpen(t)
	before := db.Commits()
	ok1, ok2 := imqtt.DMConv("a", "b"), imqtt.DMConv("a", "d")
	errs := cmtBatch(t, db,
		cmtAppend(ok1, "a", "1"),
		func(tx storage.Tx) error {
			// Reads are fine; failing before any write spoils nothing.
			if _, err := tx.AreFriends("a", "c"); err != nil {
				return err
			}
			return errCmtRefused
		},
		cmtAppend(ok2, "a", "2"),
	)
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("the others failed: %v, %v", errs[0], errs[2])
	}
	if !errors.Is(errs[1], errCmtRefused) {
		t.Errorf("failing function got %v, want its own error", errs[1])
	}
	if cmtLastSeq(t, db, ok1) != 1 || cmtLastSeq(t, db, ok2) != 1 {
		t.Errorf("the others' messages: last seqs %d, %d, want 1, 1", cmtLastSeq(t, db, ok1), cmtLastSeq(t, db, ok2))
	}
	if got := db.Commits() - before; got != 2 {
		t.Errorf("commits: %d, want 2 (the cmtHold, then the batch without a retry)", got)
	}
}

func TestCommitterErrorAfterWritingRollsBackAlone(t *testing.T) {
	db := cmtOpen(t)
	ok1, bad, ok2 := imqtt.DMConv("a", "b"), imqtt.DMConv("a", "c"), imqtt.DMConv("a", "d")
	var mu sync.Mutex
	badRuns := 0
	errs := cmtBatch(t, db,
		cmtAppend(ok1, "a", "1"),
		func(tx storage.Tx) error {
			mu.Lock()
			badRuns++
			mu.Unlock()
			if err := cmtAppend(bad, "a", "x")(tx); err != nil {
				return err
			}
			if err := tx.SetFriends("a", "c", 1); err != nil {
				return err
			}
			return errCmtRefused
		},
		cmtAppend(ok2, "a", "2"),
	)
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("the others failed: %v, %v", errs[0], errs[2])
	}
	if !errors.Is(errs[1], errCmtRefused) {
		t.Errorf("failing function got %v, want its own error", errs[1])
	}
	// The batch was rolled back and retried: the others' messages are
	// stored once, the failing function's writes not at all.
	if got := cmtLastSeq(t, db, ok1); got != 1 {
		t.Errorf("%s: last seq %d, want 1", ok1, got)
	}
	if got := cmtLastSeq(t, db, ok2); got != 1 {
		t.Errorf("%s: last seq %d, want 1", ok2, got)
	}
	if got := cmtLastSeq(t, db, bad); got != 0 {
		t.Errorf("rolled-back conversation %s: last seq %d, want 0", bad, got)
	}
	var friends bool
	_ = db.View(func(tx storage.Tx) error { friends, _ = tx.AreFriends("a", "c"); return nil })
	if friends {
		t.Error("the failing function's friendship was committed")
	}
	var seq uint64
	var found bool
	_ = db.View(func(tx storage.Tx) error { seq, _, found, _ = tx.MessageByID(bad, "a", "x"); return nil })
	if found {
		t.Errorf("the failing function's message id is stored (seq %d)", seq)
	}
	if badRuns < 1 {
		t.Errorf("failing function ran %d times", badRuns)
	}
}

func TestCommitterFailCommits(t *testing.T) {
	db := cmtOpen(t)
	conv := imqtt.DMConv("a", "b")
	db.FailCommits(syscall.ENOSPC)
	before := db.Commits()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(cmtAppend(conv, "a", fmt.Sprintf("m%d", i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, imqtt.ErrInternal) {
			t.Errorf("update %d with a failing disk: %v, want an error wrapping ErrInternal", i, err)
		}
	}
	if got := cmtLastSeq(t, db, conv); got != 0 {
		t.Errorf("with a failing disk, last seq %d: something was stored", got)
	}
	if got := db.Commits() - before; got != 0 {
		t.Errorf("commits while failing: %d", got)
	}

	db.FailCommits(nil)
	if err := db.Update(cmtAppend(conv, "a", "after")); err != nil {
		t.Fatalf("update after the disk recovered: %v", err)
	}
	if got := cmtLastSeq(t, db, conv); got != 1 {
		t.Errorf("after recovery: last seq %d, want 1", got)
	}
}

func TestCommitterUpdateAfterClose(t *testing.T) {
	db, err := OpenDir(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(cmtAppend(imqtt.DMConv("a", "b"), "a", "1")); !errors.Is(err, ErrClosed) {
		t.Errorf("update after close: %v, want ErrClosed", err)
	}
}

// TestCommitterDurableAcrossReopen checks that what Update committed is in
// the file for the next open: Update returning nil is the promise behind
// every PUBACK.
func TestCommitterDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := OpenDir(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	conv := imqtt.DMConv("a", "b")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Update(cmtAppend(conv, "a", fmt.Sprintf("m%d", i))); err != nil {
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenDir(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Check(); err != nil {
		t.Fatal(err)
	}
	err = ro.View(func(tx storage.Tx) error {
		seen := map[uint64]bool{}
		for i := range 20 {
			seq, _, ok, err := tx.MessageByID(conv, "a", fmt.Sprintf("m%d", i))
			if err != nil || !ok {
				t.Errorf("m%d: found %v, err %v", i, ok, err)
			}
			if seen[seq] {
				t.Errorf("m%d: seq %d given twice", i, seq)
			}
			seen[seq] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
