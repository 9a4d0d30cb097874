package chat_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/storage"
)

// historySeqs returns the seqs and ids of what history answers user for
// conv with the given extra fields ("" for none).
func (e *chatEnv) historySeqs(user string, conv imqtt.ConvID, extra string) ([]uint64, []string) {
	e.t.Helper()
	r := e.ok(user, fmt.Sprintf(`{"rid":"h","op":"history","conv":%q%s}`, conv, extra))
	var d struct {
		Messages []struct {
			Seq  uint64 `json:"seq"`
			ID   string `json:"id"`
			From string `json:"from"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		e.t.Fatalf("history %s: %v", r.Data, err)
	}
	var seqs []uint64
	var ids []string
	for _, m := range d.Messages {
		seqs = append(seqs, m.Seq)
		ids = append(ids, m.From+"/"+m.ID)
	}
	return seqs, ids
}

type convEntry struct {
	Conv    imqtt.ConvID `json:"conv"`
	LastSeq uint64       `json:"last_seq"`
	ReadSeq uint64       `json:"read_seq"`
	Unread  uint64       `json:"unread"`
	Last    *struct {
		Seq uint64 `json:"seq"`
	} `json:"last"`
}

func (e *chatEnv) convList(user string) []convEntry {
	e.t.Helper()
	r := e.ok(user, `{"rid":"c","op":"conv.list"}`)
	var d struct {
		Convs []convEntry `json:"convs"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		e.t.Fatalf("conv.list %s: %v", r.Data, err)
	}
	return d.Convs
}

// recreate removes user and creates it again, as the admin API does.
func (e *chatEnv) recreate(user string) {
	e.t.Helper()
	if err := e.s.RemoveUser(user); err != nil {
		e.t.Fatalf("remove %s: %v", user, err)
	}
	if err := e.db.CreateUser(storage.User{ID: user, Role: imqtt.RoleUser, Hash: []byte("y")}); err != nil {
		e.t.Fatalf("create %s again: %v", user, err)
	}
}

// streamSeqs returns the seqs of the conv messages in user's stream.
func (e *chatEnv) streamSeqs(user string, conv imqtt.ConvID) []uint64 {
	e.t.Helper()
	es, err := e.db.ReadStream(user, 0, 1000, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []uint64
	for _, en := range es {
		if en.Conv == conv && en.Payload != nil {
			out = append(out, en.Seq)
		}
	}
	return out
}

// A user id removed and created again is a new user: its message ids are
// its own (an id the old user sent is a new message, stored and delivered),
// and it sees nothing of a DM from before it existed, while the peer keeps
// the whole conversation.
func TestRecreatedUserDM(t *testing.T) {
	for _, bobFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "alice writes first", true: "bob writes first"}[bobFirst], func(t *testing.T) {
			e := newChatEnv(t, acl.DMFriends, "alice", "bob")
			e.befriend("alice", "bob")
			conv := imqtt.DMConv("alice", "bob")
			for _, id := range []string{"c-1", "c-2", "c-3"} {
				if _, err := e.s.SendDM("alice", "bob", []byte(`{"id":"`+id+`","body":"old"}`)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.s.SendDM("bob", "alice", []byte(`{"id":"b-1","body":"old"}`)); err != nil {
				t.Fatal(err)
			}

			e.recreate("alice")
			if h := e.streamHead("alice"); h != 0 {
				t.Fatalf("new alice's stream head %d; want an empty stream", h)
			}
			// Before anything new: nothing to see, list or mark.
			if seqs, _ := e.historySeqs("alice", conv, ""); len(seqs) != 0 {
				t.Fatalf("new alice's history before any new message: %v", seqs)
			}
			if seqs, _ := e.historySeqs("alice", conv, `,"after":0`); len(seqs) != 0 {
				t.Fatalf("new alice's history after 0: %v", seqs)
			}
			if cs := e.convList("alice"); len(cs) != 0 {
				t.Fatalf("new alice's conv.list: %+v", cs)
			}
			e.n.take()
			bobEvents := len(e.events("bob"))
			r := e.ok("alice", fmt.Sprintf(`{"rid":"r","op":"read","conv":%q,"seq":2}`, conv))
			if string(r.Data) != `{"read_seq":4}` {
				t.Fatalf("new alice reads an old seq: %s; want read_seq 4, where she starts", r.Data)
			}
			e.wantNotified()
			if n := len(e.events("bob")); n != bobEvents {
				t.Fatalf("bob got %d events from new alice's read of an old seq", n-bobEvents)
			}

			e.befriend("alice", "bob")
			e.n.take()
			wantSeqs, wantIDs := []uint64{5, 6}, []string{"alice/c-1", "bob/b-2"}
			aliceSeq := uint64(5)
			if bobFirst {
				if _, err := e.s.SendDM("bob", "alice", []byte(`{"id":"b-2","body":"new"}`)); err != nil {
					t.Fatal(err)
				}
				wantIDs = []string{"bob/b-2", "alice/c-1"}
				aliceSeq = 6
				e.wantNotified([]string{"alice", "bob"})
				cs := e.convList("alice")
				if len(cs) != 1 || cs[0].LastSeq != 5 || cs[0].ReadSeq != 4 || cs[0].Unread != 1 || cs[0].Last == nil || cs[0].Last.Seq != 5 {
					t.Fatalf("new alice's conv.list after bob's new message: %+v; want last 5, read 4, unread 1", cs)
				}
			}
			res, err := e.s.SendDM("alice", "bob", []byte(`{"id":"c-1","body":"new"}`))
			if err != nil || res.Duplicate || res.Seq != aliceSeq {
				t.Fatalf("new alice's c-1: %+v, %v; want a new message, seq %d", res, err, aliceSeq)
			}
			e.wantNotified([]string{"alice", "bob"})
			if got := e.streamSeqs("bob", conv); len(got) == 0 || got[len(got)-1] != aliceSeq {
				t.Fatalf("bob's stream has %s seqs %v; want %d last", conv, got, aliceSeq)
			}
			// Her own resend is still a resend.
			if res, err := e.s.SendDM("alice", "bob", []byte(`{"id":"c-1","body":"new"}`)); err != nil || !res.Duplicate || res.Seq != aliceSeq {
				t.Fatalf("new alice's resend of c-1: %+v, %v; want the duplicate of %d", res, err, aliceSeq)
			}
			if !bobFirst {
				if _, err := e.s.SendDM("bob", "alice", []byte(`{"id":"b-2","body":"new"}`)); err != nil {
					t.Fatal(err)
				}
			}

			seqs, ids := e.historySeqs("alice", conv, "")
			if !slices.Equal(seqs, wantSeqs) || !slices.Equal(ids, wantIDs) {
				t.Fatalf("new alice's history: %v %v; want %v %v", seqs, ids, wantSeqs, wantIDs)
			}
			for _, q := range []string{`,"after":0`, `,"after":2`, `,"before":7`} {
				if seqs, _ := e.historySeqs("alice", conv, q); !slices.Equal(seqs, wantSeqs) {
					t.Fatalf("new alice's history%s: %v; want %v", q, seqs, wantSeqs)
				}
			}
			if seqs, _ := e.historySeqs("alice", conv, `,"before":5`); len(seqs) != 0 {
				t.Fatalf("new alice's history before 5: %v; want none", seqs)
			}
			if got := e.streamSeqs("alice", conv); !slices.Equal(got, wantSeqs) {
				t.Fatalf("new alice's stream has %s seqs %v; want %v", conv, got, wantSeqs)
			}
			cs := e.convList("alice")
			wantRead := uint64(6)
			if !bobFirst {
				wantRead = 5
			}
			if len(cs) != 1 || cs[0].LastSeq != 6 || cs[0].ReadSeq != wantRead || cs[0].Unread != 6-wantRead || cs[0].Last == nil || cs[0].Last.Seq != 6 {
				t.Fatalf("new alice's conv.list: %+v; want last 6, read %d", cs, wantRead)
			}

			// Bob keeps it all.
			seqs, ids = e.historySeqs("bob", conv, "")
			if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5, 6}) || ids[0] != "alice/c-1" || ids[3] != "bob/b-1" {
				t.Fatalf("bob's history: %v %v; want seqs 1-6 from the old messages on", seqs, ids)
			}
			cs = e.convList("bob")
			bobRead := uint64(6) // his b-2 came last
			if bobFirst {
				bobRead = 5
			}
			if len(cs) != 1 || cs[0].LastSeq != 6 || cs[0].ReadSeq != bobRead {
				t.Fatalf("bob's conv.list: %+v; want last 6, read %d", cs, bobRead)
			}
		})
	}
}

// In a group, too, a removed user's message ids do not follow its id: a
// user created again and added again sends them as new messages.
func TestRecreatedUserGroup(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")
	e.befriend("alice", "bob")
	e.befriend("bob", "carol")
	e.ok("bob", `{"rid":"g","op":"group.create","group":"team","members":["alice","carol"]}`)
	conv := imqtt.GroupConv("team")
	if _, err := e.s.SendGroup("alice", "team", []byte(`{"id":"m-1","body":"old"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SendGroup("carol", "team", []byte(`{"id":"m-1","body":"old"}`)); err != nil {
		t.Fatal(err)
	}

	e.recreate("alice")
	e.befriend("alice", "bob")
	e.ok("bob", `{"rid":"a","op":"group.add","group":"team","users":["alice"]}`)
	e.n.take()
	res, err := e.s.SendGroup("alice", "team", []byte(`{"id":"m-1","body":"new"}`))
	if err != nil || res.Duplicate || res.Seq != 3 {
		t.Fatalf("new alice's m-1: %+v, %v; want a new message, seq 3", res, err)
	}
	e.wantNotified([]string{"alice", "bob", "carol"})
	if seqs, ids := e.historySeqs("alice", conv, ""); !slices.Equal(seqs, []uint64{3}) || ids[0] != "alice/m-1" {
		t.Fatalf("new alice's history: %v %v; want only seq 3", seqs, ids)
	}
	if seqs, _ := e.historySeqs("bob", conv, ""); !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("bob's history: %v; want 1-3", seqs)
	}
	// Carol's m-1 is carol's: still hers, still a resend.
	if res, err := e.s.SendGroup("carol", "team", []byte(`{"id":"m-1","body":"old"}`)); err != nil || !res.Duplicate || res.Seq != 2 {
		t.Fatalf("carol's resend: %+v, %v; want the duplicate of seq 2", res, err)
	}
}
