package bolt_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// histOpen opens a store in a temporary directory; when the test ends the
// file must pass bbolt's consistency check.
func histOpen(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.OpenDir(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
		db.Close()
	})
	return db
}

// histFill appends n messages to conv in one transaction; the payload of
// seq s is "{conv}/{s}".
func histFill(t *testing.T, db *bolt.DB, conv imqtt.ConvID, n int) {
	t.Helper()
	err := db.Update(func(tx storage.Tx) error {
		for range n {
			if _, err := tx.AppendMessage(conv, "alice", "", 0, func(seq uint64) []byte {
				return fmt.Appendf(nil, "%s/%d", conv, seq)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// histSeqs runs a History query and returns the seqs of what it found,
// checking each payload belongs to conv and that the result is not nil.
func histSeqs(t *testing.T, db *bolt.DB, conv imqtt.ConvID, floor uint64, q storage.HistoryQuery) []int {
	t.Helper()
	var got [][]byte
	if err := db.View(func(tx storage.Tx) error {
		var err error
		got, err = tx.History(conv, floor, q)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatalf("History(%s, %d, %+v) = nil, want an empty slice", conv, floor, q)
	}
	out := make([]int, len(got))
	for i, p := range got {
		rest, ok := strings.CutPrefix(string(p), string(conv)+"/")
		s, err := strconv.Atoi(rest)
		if !ok || err != nil {
			t.Fatalf("History(%s): payload %q is not one of its messages", conv, p)
		}
		out[i] = s
	}
	return out
}

func histRange(lo, hi int) []int {
	out := []int{}
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

func TestHistoryQueries(t *testing.T) {
	db := histOpen(t)
	const conv = imqtt.ConvID("dm:alice:bob")
	histFill(t, db, conv, 10)
	// Conversations whose names prefix one another stay apart.
	histFill(t, db, "g:team", 3)
	histFill(t, db, "g:team2", 20)
	histFill(t, db, "g:tea", 5)

	after := func(n uint64, limit int) storage.HistoryQuery {
		return storage.HistoryQuery{After: n, HasAfter: true, Limit: limit}
	}
	for _, tc := range []struct {
		name  string
		conv  imqtt.ConvID
		floor uint64
		q     storage.HistoryQuery
		want  []int
	}{
		{"latest", conv, 0, storage.HistoryQuery{Limit: 3}, histRange(8, 10)},
		{"latest, all", conv, 0, storage.HistoryQuery{Limit: 500}, histRange(1, 10)},
		{"before", conv, 0, storage.HistoryQuery{Before: 5, Limit: 2}, histRange(3, 4)},
		{"before, fewer than the limit", conv, 0, storage.HistoryQuery{Before: 4, Limit: 50}, histRange(1, 3)},
		{"before the first", conv, 0, storage.HistoryQuery{Before: 1, Limit: 50}, nil},
		{"before just past the last", conv, 0, storage.HistoryQuery{Before: 11, Limit: 2}, histRange(9, 10)},
		{"before far past the last", conv, 0, storage.HistoryQuery{Before: 1 << 40, Limit: 2}, histRange(9, 10)},
		{"after 0", conv, 0, after(0, 3), histRange(1, 3)},
		{"after, fewer than the limit", conv, 0, after(8, 5), histRange(9, 10)},
		{"after the last", conv, 0, after(10, 5), nil},
		{"after far past the last", conv, 0, after(1<<40, 5), nil},
		{"limit 0", conv, 0, storage.HistoryQuery{Limit: 0}, nil},
		{"limit 0 after", conv, 0, after(0, 0), nil},
		{"floor, latest", conv, 4, storage.HistoryQuery{Limit: 100}, histRange(5, 10)},
		{"floor, before above it", conv, 4, storage.HistoryQuery{Before: 7, Limit: 100}, histRange(5, 6)},
		{"floor, before at its edge", conv, 4, storage.HistoryQuery{Before: 5, Limit: 100}, nil},
		{"floor, before under it", conv, 4, storage.HistoryQuery{Before: 2, Limit: 100}, nil},
		{"floor, after under it", conv, 4, after(1, 3), histRange(5, 7)},
		{"floor, after above it", conv, 4, after(6, 3), histRange(7, 9)},
		{"floor at the last", conv, 10, storage.HistoryQuery{Limit: 100}, nil},
		{"floor past the last", conv, 12, after(0, 100), nil},
		{"no such conversation", "dm:carol:dave", 0, storage.HistoryQuery{Limit: 10}, nil},
		{"no such conversation, after", "dm:carol:dave", 0, after(0, 10), nil},
		{"prefix of another", "g:tea", 0, storage.HistoryQuery{Limit: 100}, histRange(1, 5)},
		{"prefixed by another", "g:team", 0, after(0, 100), histRange(1, 3)},
		{"prefixed by a shorter one", "g:team2", 0, storage.HistoryQuery{Before: 4, Limit: 100}, histRange(1, 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := histSeqs(t, db, tc.conv, tc.floor, tc.q); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Fatalf("History(%s, floor %d, %+v) = %v, want %v", tc.conv, tc.floor, tc.q, got, tc.want)
			}
		})
	}
}

// TestHistoryPagesCoverAll walks a conversation both ways in pages of
// several sizes: every message once, none missing.
func TestHistoryPagesCoverAll(t *testing.T) {
	db := histOpen(t)
	const conv = imqtt.ConvID("g:big")
	const n = 2345
	histFill(t, db, conv, n)
	for _, limit := range []int{1, 7, 50, 500} {
		for _, floor := range []uint64{0, 1000} {
			t.Run(fmt.Sprintf("limit %d floor %d", limit, floor), func(t *testing.T) {
				var fwd []int
				for a := uint64(0); ; {
					p := histSeqs(t, db, conv, floor, storage.HistoryQuery{After: a, HasAfter: true, Limit: limit})
					if len(p) == 0 {
						break
					}
					if len(p) > limit {
						t.Fatalf("page of %d, limit %d", len(p), limit)
					}
					fwd = append(fwd, p...)
					a = uint64(p[len(p)-1])
				}
				var back []int
				p := histSeqs(t, db, conv, floor, storage.HistoryQuery{Limit: limit})
				for len(p) > 0 {
					back = append(slices.Clone(p), back...)
					p = histSeqs(t, db, conv, floor, storage.HistoryQuery{Before: uint64(p[0]), Limit: limit})
				}
				want := histRange(int(floor)+1, n)
				if !slices.Equal(fwd, want) {
					t.Fatalf("forward: %d messages, want %d (%v...)", len(fwd), len(want), fwd[:min(len(fwd), 10)])
				}
				if !slices.Equal(back, want) {
					t.Fatalf("backward: %d messages, want %d", len(back), len(want))
				}
			})
		}
	}
}

// TestHistoryOutlivesItsTransaction: what History returns is a copy, good
// after the transaction is over and the pages it came from changed.
func TestHistoryOutlivesItsTransaction(t *testing.T) {
	db := histOpen(t)
	const conv = imqtt.ConvID("dm:alice:bob")
	histFill(t, db, conv, 300)
	var got [][]byte
	if err := db.View(func(tx storage.Tx) error {
		var err error
		got, err = tx.History(conv, 0, storage.HistoryQuery{Limit: 200})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	histFill(t, db, conv, 3000)
	if err := db.Update(func(tx storage.Tx) error { return tx.DeleteGroup("nothing") }); err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if want := fmt.Sprintf("%s/%d", conv, 101+i); string(p) != want {
			t.Fatalf("message %d is now %q, want %q", i, p, want)
		}
	}
}

// TestHistoryOfDeletedGroup: a deleted group has no history and no last
// seq, and a group made again under its id starts at seq 1.
func TestHistoryOfDeletedGroup(t *testing.T) {
	db := histOpen(t)
	const conv = imqtt.ConvID("g:team")
	histFill(t, db, conv, 30)
	histFill(t, db, "g:team2", 4)
	if err := db.Update(func(tx storage.Tx) error {
		if _, err := tx.AppendMessage(conv, "bob", "b1", 0, func(seq uint64) []byte { return fmt.Appendf(nil, "%s/%d", conv, seq) }); err != nil {
			return err
		}
		return tx.DeleteGroup("team")
	}); err != nil {
		t.Fatal(err)
	}
	if got := histSeqs(t, db, conv, 0, storage.HistoryQuery{Limit: 100}); len(got) != 0 {
		t.Fatalf("history of a deleted group: %v", got)
	}
	err := db.View(func(tx storage.Tx) error {
		last, err := tx.LastSeq(conv)
		if err != nil || last != 0 {
			return fmt.Errorf("LastSeq = %d, %v; want 0", last, err)
		}
		if _, ok, err := tx.LastMessage(conv); ok || err != nil {
			return fmt.Errorf("LastMessage: ok %v, %v; want none", ok, err)
		}
		if _, _, ok, err := tx.MessageByID(conv, "bob", "b1"); ok || err != nil {
			return fmt.Errorf("MessageByID of a deleted group's message: ok %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := histSeqs(t, db, "g:team2", 0, storage.HistoryQuery{Limit: 100}); !slices.Equal(got, histRange(1, 4)) {
		t.Fatalf("a group whose id the deleted one prefixes: %v", got)
	}
	histFill(t, db, conv, 2)
	if got := histSeqs(t, db, conv, 0, storage.HistoryQuery{Limit: 100}); !slices.Equal(got, histRange(1, 2)) {
		t.Fatalf("the group made again: %v", got)
	}
}
