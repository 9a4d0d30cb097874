package chat_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/chat"
)

// befriend makes a and b friends through the requests a client would make.
func (e *chatEnv) befriend(a, b string) {
	e.t.Helper()
	e.ok(a, fmt.Sprintf(`{"rid":"f1","op":"friend.request","user":%q}`, b))
	e.ok(b, fmt.Sprintf(`{"rid":"f2","op":"friend.accept","user":%q}`, a))
}

// raw runs a request and returns the response exactly as sent.
func (e *chatEnv) raw(user, payload string) string {
	e.t.Helper()
	resp, _, _ := e.s.Request(chat.Caller{User: user, ClientID: user + "-dev"}, []byte(payload))
	return string(resp)
}

// Ops with nothing to return answer with data: {} (PROTOCOL.md section 5:
// every success has the shape {"rid", "ok": true, "data": {...}}); errors
// keep no data.
func TestEmptySuccessCarriesData(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol", "dave", "erin")
	e.befriend("alice", "carol")
	e.befriend("alice", "dave")
	e.ok("alice", `{"rid":"g","op":"group.create","group":"team","members":["dave"]}`)
	e.ok("erin", `{"rid":"e","op":"friend.request","user":"alice"}`)
	for _, tc := range []struct {
		name, user, payload string
	}{
		{"friend.request", "alice", `{"rid":"r1","op":"friend.request","user":"bob"}`},
		{"friend.accept", "bob", `{"rid":"r2","op":"friend.accept","user":"alice"}`},
		{"friend.reject", "alice", `{"rid":"r3","op":"friend.reject","user":"erin"}`},
		{"friend.remove", "alice", `{"rid":"r4","op":"friend.remove","user":"bob"}`},
		{"block.add", "alice", `{"rid":"r5","op":"block.add","user":"bob"}`},
		{"block.remove", "alice", `{"rid":"r6","op":"block.remove","user":"bob"}`},
		{"group.add", "alice", `{"rid":"r7","op":"group.add","group":"team","users":["carol"]}`},
		{"group.kick", "alice", `{"rid":"r8","op":"group.kick","group":"team","user":"dave"}`},
		{"group.leave", "carol", `{"rid":"r9","op":"group.leave","group":"team"}`},
		{"typing", "alice", `{"rid":"r10","op":"typing","conv":"dm:alice:bob"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rid struct {
				Rid string `json:"rid"`
			}
			if err := json.Unmarshal([]byte(tc.payload), &rid); err != nil {
				t.Fatal(err)
			}
			want := `{"rid":"` + rid.Rid + `","ok":true,"data":{}}`
			if got := e.raw(tc.user, tc.payload); got != want {
				t.Fatalf("response %s; want %s", got, want)
			}
		})
	}
	got := e.raw("alice", `{"rid":"e1","op":"friend.remove","user":"bob"}`)
	if want := `{"rid":"e1","ok":false,"error":{"code":"not_friends","message":"alice and bob are not friends"}}`; got != want {
		t.Fatalf("error response %s; want %s", got, want)
	}
}
