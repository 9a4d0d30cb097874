package bolt_test

import (
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// duSend stores a message from sender in conv with a client id, as the chat
// service does, and gives sender a state in conv unless it has one.
func duSend(t *testing.T, db *bolt.DB, conv imqtt.ConvID, sender, id string) uint64 {
	t.Helper()
	var seq uint64
	err := db.Update(func(tx storage.Tx) error {
		var err error
		seq, err = tx.AppendMessage(conv, sender, id, 1, func(s uint64) []byte { return []byte(`{}`) })
		if err != nil {
			return err
		}
		if _, ok, err := tx.ConvState(sender, conv); err != nil || ok {
			return err
		}
		return tx.PutConvState(sender, storage.ConvState{Conv: conv, ReadSeq: seq})
	})
	if err != nil {
		t.Fatalf("send %s/%s/%s: %v", conv, sender, id, err)
	}
	return seq
}

// duLookup reports the seq stored for (conv, sender, id), if any.
func duLookup(t *testing.T, db *bolt.DB, conv imqtt.ConvID, sender, id string) (uint64, bool) {
	t.Helper()
	var seq uint64
	var ok bool
	err := db.View(func(tx storage.Tx) error {
		var err error
		seq, _, ok, err = tx.MessageByID(conv, sender, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq, ok
}

// DeleteUser takes the user's idempotency entries in the conversations it is
// in, so that a new user with the same id is not answered with the old
// user's seqs; everyone else's entries, and every message, stay.
func TestDeleteUserForgetsItsMessageIDs(t *testing.T) {
	db := openTestDB(t)
	for _, u := range []string{"alice", "alice2", "bob"} {
		mustCreateUser(t, db, u)
	}
	dm := imqtt.DMConv("alice", "bob")
	grp := imqtt.GroupConv("team")
	other := imqtt.DMConv("alice2", "bob")
	left := imqtt.GroupConv("old")
	type ref struct {
		conv   imqtt.ConvID
		sender string
		id     string
	}
	seqs := map[ref]uint64{}
	for _, r := range []ref{
		{dm, "alice", "c-1"}, {dm, "alice", "c-2"}, {dm, "bob", "c-1"},
		{grp, "alice", "m-1"}, {grp, "bob", "m-1"},
		// A user id with alice's as a prefix is someone else.
		{grp, "alice2", "m-1"}, {other, "alice2", "c-1"},
		// A group alice left before her removal: no state names it.
		{left, "alice", "m-9"}, {left, "bob", "m-9"},
	} {
		seqs[r] = duSend(t, db, r.conv, r.sender, r.id)
	}
	if err := db.Update(func(tx storage.Tx) error { return tx.DeleteConvState("alice", left) }); err != nil {
		t.Fatal(err)
	}

	if err := db.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	for r, want := range seqs {
		seq, ok := duLookup(t, db, r.conv, r.sender, r.id)
		if r.sender == "alice" {
			if ok {
				t.Errorf("%s %s %s: still indexed (seq %d) after alice was removed", r.conv, r.sender, r.id, seq)
			}
			continue
		}
		if !ok || seq != want {
			t.Errorf("%s %s %s: seq %d, %v; want %d", r.conv, r.sender, r.id, seq, ok, want)
		}
	}
	// The messages stay: they are in bob's history too.
	for conv, want := range map[imqtt.ConvID]int{dm: 3, grp: 3} {
		var n int
		if err := db.View(func(tx storage.Tx) error {
			ms, err := tx.History(conv, 0, storage.HistoryQuery{Limit: 10})
			n = len(ms)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s after removing alice: %d messages; want %d", conv, n, want)
		}
	}
}
