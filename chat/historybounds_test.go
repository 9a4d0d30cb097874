package chat_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
)

// history: before 0 has nothing before it, after 0 starts from the first
// message; negative bounds and both bounds at once are bad_request, and
// membership is checked whatever the bounds.
func TestHistoryBounds(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")
	e.befriend("alice", "bob")
	for i := range 3 {
		if _, err := e.s.SendDM("alice", "bob", []byte(fmt.Sprintf(`{"id":"m%d","body":%d}`, i, i))); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(r chatResp) []uint64 {
		t.Helper()
		var d struct {
			Messages []struct {
				Seq uint64 `json:"seq"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(r.Data, &d); err != nil || d.Messages == nil {
			t.Fatalf("data %s: %v; want a messages array", r.Data, err)
		}
		out := []uint64{}
		for _, m := range d.Messages {
			out = append(out, m.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		name, bounds string
		want         string
	}{
		{"before 0", `"before":0`, "[]"},
		{"before 0, limit 1", `"before":0,"limit":1`, "[]"},
		{"before 1", `"before":1`, "[]"},
		{"before 3", `"before":3`, "[1 2]"},
		{"after 0", `"after":0`, "[1 2 3]"},
		{"after 0, limit 2", `"after":0,"limit":2`, "[1 2]"},
		{"neither", `"limit":50`, "[1 2 3]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.ok("alice", `{"rid":"h","op":"history","conv":"dm:alice:bob",`+tc.bounds+`}`)
			if got := fmt.Sprint(seqs(r)); got != tc.want {
				t.Fatalf("seqs %s; want %s", got, tc.want)
			}
			if tc.want == "[]" && string(r.Data) != `{"messages":[]}` {
				t.Fatalf("data %s; want {\"messages\":[]}", r.Data)
			}
		})
	}
	for _, tc := range []struct {
		name, user, bounds string
		want               imqtt.Code
	}{
		{"before negative", "alice", `"before":-1`, imqtt.CodeBadRequest},
		{"after negative", "alice", `"after":-1`, imqtt.CodeBadRequest},
		{"both", "alice", `"before":0,"after":0`, imqtt.CodeBadRequest},
		{"both, nonzero", "alice", `"before":3,"after":1`, imqtt.CodeBadRequest},
		{"before 0, not a party", "carol", `"before":0`, imqtt.CodeNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.fail(tc.user, `{"rid":"h","op":"history","conv":"dm:alice:bob",`+tc.bounds+`}`, tc.want)
		})
	}
	// In a group that does not exist, before 0 is no_such_group, not empty.
	e.fail("alice", `{"rid":"h","op":"history","conv":"g:nope","before":0}`, imqtt.CodeNoSuchGroup)
}
