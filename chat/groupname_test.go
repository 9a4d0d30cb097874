package chat_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
)

// group.create: name is optional, up to 64 characters; an empty one is
// taken as absent, so the group is named by its id.
func TestGroupCreateName(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice")
	for _, tc := range []struct {
		name, payload, want string
	}{
		{"absent", `{"rid":"1","op":"group.create","group":"g1"}`, "g1"},
		{"empty", `{"rid":"2","op":"group.create","group":"g2","name":""}`, "g2"},
		{"given", `{"rid":"3","op":"group.create","group":"g3","name":"Three"}`, "Three"},
		{"64 characters", `{"rid":"4","op":"group.create","group":"g4","name":"` + strings.Repeat("é", 64) + `"}`, strings.Repeat("é", 64)},
		{"empty, generated id", `{"rid":"5","op":"group.create","name":""}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d struct {
				Group string `json:"group"`
			}
			if err := json.Unmarshal(e.ok("alice", tc.payload).Data, &d); err != nil || d.Group == "" {
				t.Fatalf("data: %+v, %v", d, err)
			}
			want := tc.want
			if want == "" {
				want = d.Group
			}
			var info struct {
				Name string `json:"name"`
			}
			r := e.ok("alice", fmt.Sprintf(`{"rid":"i","op":"group.info","group":%q}`, d.Group))
			if err := json.Unmarshal(r.Data, &info); err != nil || info.Name != want {
				t.Fatalf("group.info %s: name %q, %v; want %q", r.Data, info.Name, err, want)
			}
		})
	}
	e.fail("alice", `{"rid":"6","op":"group.create","group":"g6","name":"`+strings.Repeat("é", 65)+`"}`, imqtt.CodeBadRequest)
	e.fail("alice", `{"rid":"7","op":"group.info","group":"g6"}`, imqtt.CodeNoSuchGroup)
}
