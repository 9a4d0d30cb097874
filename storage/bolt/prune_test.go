package bolt

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/imqtt/imqtt/storage"
)

func TestPruneStreams(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := db.CreateUser(storage.User{ID: u, Role: "user"}); err != nil {
			t.Fatal(err)
		}
	}
	// alice has a device that acknowledged 3 of 5; bob none (entries are
	// unreachable); carol's device saw nothing yet but entries are old.
	if _, err := db.BindDevice("a1", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BindDevice("c1", "carol"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-2 * time.Hour).UnixMilli()
	err = db.Update(func(tx storage.Tx) error {
		for i := 0; i < 5; i++ {
			for _, u := range []string{"alice", "bob"} {
				if _, err := tx.AppendEvent(u, now.UnixMilli(), []byte(`{}`)); err != nil {
					return err
				}
			}
			if _, err := tx.AppendEvent("carol", old, []byte(`{}`)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SaveCursors(map[string]uint64{"a1": 3}); err != nil {
		t.Fatal(err)
	}
	// Saving a cursor drops what every device of the user acknowledged.
	if left, _ := db.ReadStream("alice", 0, 100, nil); len(left) != 2 {
		t.Fatalf("alice keeps %d entries after her only device acknowledged 3 of 5, want 2", len(left))
	}
	n, err := db.PruneStreams(100, time.Hour, now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5+5 {
		t.Fatalf("pruned %d entries, want 10 (bob's 5 that no device will get, carol's 5 too old)", n)
	}
	left, _ := db.ReadStream("alice", 0, 100, nil)
	if len(left) != 2 || left[0].Pos != 4 {
		t.Fatalf("alice keeps %+v, want positions 4 and 5", left)
	}
	if head, _ := db.StreamHead("bob"); head != 5 {
		t.Fatalf("bob's head %d after pruning, want 5 (positions are never reused)", head)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}
