package chat_test

import (
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
)

// lastSeq is conv's last seq in the store.
func (e *chatEnv) lastSeq(conv imqtt.ConvID) uint64 {
	e.t.Helper()
	var last uint64
	err := e.db.View(func(tx storage.Tx) error {
		var err error
		last, err = tx.LastSeq(conv)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return last
}

func (e *chatEnv) streamHead(user string) uint64 {
	e.t.Helper()
	h, err := e.db.StreamHead(user)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// A resend of a stored message is acknowledged with its original seq also
// after the sender lost the right to send (PROTOCOL.md section 3: a resend
// is acknowledged and not stored or delivered again), while a new id is
// refused by the rules of the moment.
func TestResendAfterLosingRight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group bool
		lose  func(e *chatEnv)
		want  imqtt.Code // for a new id afterwards
	}{
		{"DM after unfriend", false, func(e *chatEnv) {
			e.ok("bob", `{"rid":"l","op":"friend.remove","user":"alice"}`)
		}, imqtt.CodeNotFriends},
		{"DM after the peer blocked", false, func(e *chatEnv) {
			e.ok("bob", `{"rid":"l","op":"block.add","user":"alice"}`)
		}, imqtt.CodeNotAllowed},
		{"DM after the sender blocked", false, func(e *chatEnv) {
			e.ok("alice", `{"rid":"l","op":"block.add","user":"bob"}`)
		}, imqtt.CodeNotAllowed},
		{"group after leave", true, func(e *chatEnv) {
			e.ok("alice", `{"rid":"l","op":"group.leave","group":"team"}`)
		}, imqtt.CodeNotMember},
		{"group after kick", true, func(e *chatEnv) {
			e.ok("bob", `{"rid":"l","op":"group.kick","group":"team","user":"alice"}`)
		}, imqtt.CodeNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")
			e.befriend("alice", "bob")
			e.befriend("bob", "carol")
			send := func(payload string) (chat.Result, error) {
				return e.s.SendDM("alice", "bob", []byte(payload))
			}
			conv := imqtt.DMConv("alice", "bob")
			if tc.group {
				e.ok("bob", `{"rid":"g","op":"group.create","group":"team","members":["alice","carol"]}`)
				send = func(payload string) (chat.Result, error) {
					return e.s.SendGroup("alice", "team", []byte(payload))
				}
				conv = imqtt.GroupConv("team")
			}
			first, err := send(`{"id":"m1","body":"one"}`)
			if err != nil || first.Duplicate {
				t.Fatalf("first send: %+v, %v", first, err)
			}
			if _, err := send(`{"id":"m2","body":"two"}`); err != nil {
				t.Fatalf("second send: %v", err)
			}
			tc.lose(e)
			e.n.take()
			last := e.lastSeq(conv)
			heads := map[string]uint64{}
			for _, u := range []string{"alice", "bob", "carol"} {
				heads[u] = e.streamHead(u)
			}

			res, err := send(`{"id":"m1","body":"one, again"}`)
			if err != nil || !res.Duplicate || res.Seq != first.Seq || res.ID != "m1" || res.Conv != conv {
				t.Fatalf("resend: %+v, %v; want the duplicate of seq %d", res, err, first.Seq)
			}
			// A malformed resend is still judged as a payload first.
			if _, err := send(`{"id":"m1"}`); imqtt.ErrorCode(err) != imqtt.CodeBadRequest {
				t.Fatalf("resend without a body: %v; want bad_request", err)
			}
			res, err = send(`{"id":"m3","body":"new"}`)
			if imqtt.ErrorCode(err) != tc.want || res.ID != "m3" {
				t.Fatalf("new id: %+v, %v; want %s with id m3", res, err, tc.want)
			}
			if _, err := send(`{"body":"no id"}`); imqtt.ErrorCode(err) != tc.want {
				t.Fatalf("no id: %v; want %s", err, tc.want)
			}

			// Nothing was stored, appended or notified.
			e.wantNotified()
			if got := e.lastSeq(conv); got != last {
				t.Fatalf("last seq %d; want %d", got, last)
			}
			for u, h := range heads {
				if got := e.streamHead(u); got != h {
					t.Fatalf("%s's stream head %d; want %d", u, got, h)
				}
			}
		})
	}
}

// A resend is per sender and conversation: the same id stored by another
// sender, or by the same sender elsewhere, does not make a refused message
// a duplicate.
func TestResendScope(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")
	e.befriend("alice", "bob")
	e.befriend("bob", "carol")
	if _, err := e.s.SendDM("bob", "alice", []byte(`{"id":"m1","body":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SendDM("alice", "bob", []byte(`{"id":"m2","body":1}`)); err != nil {
		t.Fatal(err)
	}
	e.ok("bob", `{"rid":"l","op":"friend.remove","user":"alice"}`)
	// Bob sent m1, not alice: hers is a new message, refused.
	if _, err := e.s.SendDM("alice", "bob", []byte(`{"id":"m1","body":1}`)); imqtt.ErrorCode(err) != imqtt.CodeNotFriends {
		t.Fatalf("alice's m1: %v; want not_friends", err)
	}
	// Alice stored m2 with bob, not with carol.
	if _, err := e.s.SendDM("alice", "carol", []byte(`{"id":"m2","body":1}`)); imqtt.ErrorCode(err) != imqtt.CodeNotFriends {
		t.Fatalf("alice's m2 to carol: %v; want not_friends", err)
	}
}
