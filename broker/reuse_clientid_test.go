package broker_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// A client id whose user was removed is free; bound again (here by the user
// created again under the same id), it starts at the head of its new
// owner's stream. The broker's in-memory cursor of the old binding, flushed
// while the device was online, must not carry over: it would skip the new
// owner's first entries.
func TestReboundClientIDStartsAtNewStream(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.AddUser("root", "pw-root", imqtt.RoleOperator)
	b.Users("alice", "bob")
	b.MakeFriends(t, "alice", "bob")
	alice := reuseDevice(t, b, "alice", "alice-dev")
	bob := reuseDevice(t, b, "bob", "bob-dev")
	for _, id := range []string{"c-1", "c-2", "c-3", "c-4"} {
		reuseSend(t, alice, "alice", "im/dm/bob", "im/u/alice/dm/bob", id)
		reuseNext(t, bob, "im/u/bob/dm/alice")
	}
	head, err := b.Store().StreamHead("alice")
	if err != nil {
		t.Fatal(err)
	}
	// Saved while the device is still online.
	brokertest.Eventually(t, "alice's cursor saved", func() bool {
		cur, err := b.Store().Cursor("alice-dev")
		return err == nil && cur == head
	})

	reuseAdmin(t, b, "DELETE", "/v1/users/alice", "", http.StatusNoContent)
	select {
	case <-alice.Gone():
	case <-time.After(brokertest.Timeout):
		t.Fatal("removed alice's device is still connected")
	}
	reuseAdmin(t, b, "POST", "/v1/users", `{"user":"alice","password":"pw-alice"}`, http.StatusCreated)
	alice = reuseDevice(t, b, "alice", "alice-dev")
	c0, _ := b.Store().Cursor("alice-dev")
	h0, _ := b.Store().StreamHead("alice")
	t.Logf("old head %d; after rebinding: stored cursor %d, head %d", head, c0, h0)
	reuseReq(t, alice, "alice", `{"rid":"f","op":"friend.request","user":"bob"}`)
	reuseReq(t, bob, "bob", `{"rid":"f","op":"friend.accept","user":"alice"}`)
	// The first entry of the new alice's stream.
	var ev struct {
		Type string `json:"type"`
		User string `json:"user"`
	}
	if err := json.Unmarshal(alice.NextOn(t, "im/u/alice/ev").Payload, &ev); err != nil || ev.Type != "friend.added" || ev.User != "bob" {
		t.Fatalf("new alice's first event: %+v, %v; want friend.added bob", ev, err)
	}
	reuseSend(t, bob, "bob", "im/dm/alice", "im/u/bob/dm/alice", "b-1")
	if got := reuseNext(t, alice, "im/u/alice/dm/bob"); got.ID != "b-1" {
		t.Fatalf("new alice got %+v; want bob's b-1", got)
	}
}
