package bolt_test

import (
	"os"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

func storeStats(t *testing.T, db *bolt.DB) bolt.StoreStats {
	t.Helper()
	s, err := db.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("store check after Stats: %v", err)
	}
	return s
}

// sendStored stores a message in conv and a reference to it in each user's
// stream, as the chat layer does for a DM or a group message.
func sendStored(t *testing.T, db *bolt.DB, conv imqtt.ConvID, from string, ts int64, to ...string) {
	t.Helper()
	err := db.Update(func(tx storage.Tx) error {
		seq, err := tx.AppendMessage(conv, from, "", ts, func(uint64) []byte { return []byte(`{}`) })
		if err != nil {
			return err
		}
		for _, u := range to {
			if _, err := tx.AppendMessageRef(u, ts, conv, seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("store message in %s: %v", conv, err)
	}
}

func bind(t *testing.T, db *bolt.DB, client, user string) {
	t.Helper()
	if _, err := db.BindDevice(client, user); err != nil {
		t.Fatalf("BindDevice(%s, %s): %v", client, user, err)
	}
}

func TestStoreStatsEmpty(t *testing.T) {
	db := openTestDB(t)
	got := storeStats(t, db)
	fi, err := os.Stat(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	want := bolt.StoreStats{Bytes: fi.Size()}
	if got != want {
		t.Fatalf("Stats of an empty store = %+v, want %+v", got, want)
	}
	if got.Bytes <= 0 {
		t.Fatalf("Bytes = %d, want the file size", got.Bytes)
	}
}

func TestStoreStats(t *testing.T) {
	db := openTestDB(t)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		mustCreateUser(t, db, u)
	}
	if err := db.CreateUser(storage.User{ID: "root", Role: imqtt.RoleOperator, Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	// Devices bound before anything is sent start at the head (0): all
	// that follows is their backlog until their cursors move.
	bind(t, db, "a1", "alice")
	bind(t, db, "b1", "bob")
	bind(t, db, "b2", "bob")

	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()
	ab := imqtt.DMConv("alice", "bob")
	for i := range 3 {
		sendStored(t, db, ab, "alice", t0+int64(i)*1000, "alice", "bob")
	}
	// "empty" is a conversation without messages; "gone" is deleted with
	// its messages, which leave the count.
	err := db.Update(func(tx storage.Tx) error {
		for _, g := range []string{"team", "empty", "gone"} {
			if err := tx.PutGroup(storage.Group{ID: g, Name: g, Owner: "alice", Members: []storage.Member{{User: "alice"}, {User: "carol"}}}); err != nil {
				return err
			}
		}
		_, err := tx.AppendEvent("carol", t0-5000, []byte(`{"type":"group.joined"}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sendStored(t, db, imqtt.GroupConv("team"), "alice", t0+10_000, "alice", "carol")
	sendStored(t, db, imqtt.GroupConv("gone"), "alice", t0+20_000, "alice", "carol")
	sendStored(t, db, imqtt.GroupConv("gone"), "alice", t0+21_000, "alice", "carol")
	if err := db.Update(func(tx storage.Tx) error { return tx.DeleteGroup("gone") }); err != nil {
		t.Fatal(err)
	}

	// Streams: alice 3 DM + 1 team + 2 gone = 6; bob 3; carol 1 event + 1
	// team + 2 gone = 4. Devices: a1 and b1, b2 at 0; carol has none.
	s := storeStats(t, db)
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("Users", s.Users, 5)
	check("Devices", s.Devices, 3)
	check("Groups", s.Groups, 2)
	check("Conversations", s.Conversations, 3) // team, empty, dm:alice:bob
	check("Messages", s.Messages, uint64(3+1))
	check("StreamEntries", s.StreamEntries, uint64(6+3+4))
	check("Backlog", s.Backlog, uint64(6+3+3))
	check("BacklogDevices", s.BacklogDevices, 3)
	check("OldestBacklogTS", s.OldestBacklogTS, t0)
	if fi, err := os.Stat(db.Path()); err != nil || s.Bytes != fi.Size() {
		t.Errorf("Bytes = %d, want the file size (%v)", s.Bytes, err)
	}

	// Acknowledgements move cursors: a1 has all, b1 the first DM.
	if err := db.SaveCursors(map[string]uint64{"a1": 6, "b1": 1}); err != nil {
		t.Fatal(err)
	}
	s = storeStats(t, db)
	check("Backlog after acks", s.Backlog, uint64(0+2+3))
	check("BacklogDevices after acks", s.BacklogDevices, 2)
	check("OldestBacklogTS after acks", s.OldestBacklogTS, t0) // b2 still waits for the first DM

	// Pruning with a bound of 1 entry per stream leaves bob's last DM,
	// which b1 and b2 both wait for, and drops what nobody will get.
	for {
		n, err := db.PruneStreams(1, 0, time.Now(), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	s = storeStats(t, db)
	check("StreamEntries after pruning", s.StreamEntries, uint64(1))
	check("Backlog after pruning", s.Backlog, uint64(2))
	check("BacklogDevices after pruning", s.BacklogDevices, 2)
	check("OldestBacklogTS after pruning", s.OldestBacklogTS, t0+2000)
	check("Messages after pruning", s.Messages, uint64(4))
}
