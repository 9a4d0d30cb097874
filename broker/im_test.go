package broker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// req publishes a request and returns the decoded response.
func req(t *testing.T, c *brokertest.Client, user string, body string) map[string]any {
	t.Helper()
	if _, err := c.Publish("im/req", 1, []byte(body)); err != nil {
		t.Fatalf("publish request: %v", err)
	}
	m := c.NextOn(t, "im/u/"+user+"/res")
	var out map[string]any
	if err := json.Unmarshal(m.Payload, &out); err != nil {
		t.Fatalf("response %s: %v", m.Payload, err)
	}
	return out
}

func TestFriendThenDM(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			b := brokertest.Start(t, nil)
			b.Users("alice", "bob")
			a := b.Connect(t, "alice", v5)
			bo := b.Connect(t, "bob", v5)
			for _, c := range []*brokertest.Client{a, bo} {
				if code, err := c.Subscribe("im/u/"+c.ID[:len(c.ID)-4]+"/#", 1); err != nil || code > 1 {
					t.Fatalf("subscribe: %v %x", err, code)
				}
			}
			r := req(t, a, "alice", `{"rid":"1","op":"friend.request","user":"bob","note":"hi"}`)
			if r["ok"] != true || r["rid"] != "1" {
				t.Fatalf("request: %v", r)
			}
			ev := bo.NextOn(t, "im/u/bob/ev")
			t.Logf("bob ev: %s", ev.Payload)
			r = req(t, bo, "bob", `{"rid":"2","op":"friend.accept","user":"alice"}`)
			if r["ok"] != true {
				t.Fatalf("accept: %v", r)
			}
			t.Logf("alice ev: %s", a.NextOn(t, "im/u/alice/ev").Payload)
			for i := 1; i <= 3; i++ {
				if code, err := a.Publish("im/dm/bob", 1, []byte(fmt.Sprintf(`{"id":"m%d","body":"hello %d"}`, i, i))); err != nil || code != 0 {
					t.Fatalf("dm: %v %x", err, code)
				}
			}
			for i := 1; i <= 3; i++ {
				m := bo.NextOn(t, "im/u/bob/dm/alice")
				var msg map[string]any
				json.Unmarshal(m.Payload, &msg)
				if msg["seq"] != float64(i) || msg["from"] != "alice" {
					t.Fatalf("message %d: %s", i, m.Payload)
				}
				e := a.NextOn(t, "im/u/alice/dm/bob")
				if string(e.Payload) != string(m.Payload) {
					t.Fatalf("echo differs: %s vs %s", e.Payload, m.Payload)
				}
			}
			_ = time.Second
		})
	}
}

func TestGroupSmoke(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice", "bob", "carol")
	b.MakeFriendsSmoke(t, "alice", "bob")
	b.MakeFriendsSmoke(t, "alice", "carol")
	cs := map[string]*brokertest.Client{}
	for _, u := range []string{"alice", "bob", "carol"} {
		cs[u] = b.Connect(t, u, u == "bob")
		if code, err := cs[u].Subscribe("im/u/"+u+"/#", 1); err != nil || code > 1 {
			t.Fatalf("subscribe: %v %x", err, code)
		}
	}
	r := req(t, cs["alice"], "alice", `{"rid":"1","op":"group.create","group":"team","members":["bob","carol"]}`)
	if r["ok"] != true {
		t.Fatalf("create: %v", r)
	}
	for u, c := range cs {
		nextEvent(t, c, u, "group.joined")
	}
	if _, err := cs["bob"].Publish("im/g/team", 1, []byte(`{"body":"hi all"}`)); err != nil {
		t.Fatal(err)
	}
	for u, c := range cs {
		m := c.NextOn(t, "im/u/"+u+"/g/team")
		if !strings.Contains(string(m.Payload), `"seq":1`) {
			t.Fatalf("%s: %s", u, m.Payload)
		}
	}
	r = req(t, cs["carol"], "carol", `{"rid":"2","op":"conv.list"}`)
	t.Logf("conv.list: %v", r)
	r = req(t, cs["carol"], "carol", `{"rid":"3","op":"history","conv":"g:team"}`)
	if msgs := r["data"].(map[string]any)["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("history: %v", r)
	}
	r = req(t, cs["carol"], "carol", `{"rid":"4","op":"read","conv":"g:team","seq":1}`)
	if r["ok"] != true {
		t.Fatalf("read: %v", r)
	}
	r = req(t, cs["alice"], "alice", `{"rid":"5","op":"group.kick","group":"team","user":"carol"}`)
	if r["ok"] != true {
		t.Fatalf("kick: %v", r)
	}
	r = req(t, cs["alice"], "alice", `{"rid":"6","op":"presence"}`)
	t.Logf("presence: %v", r)
}

// nextEvent returns the next event of type typ on user's ev topic, skipping
// others (presence comes and goes).
func nextEvent(t *testing.T, c *brokertest.Client, user, typ string) map[string]any {
	t.Helper()
	for {
		m := c.NextOn(t, "im/u/"+user+"/ev")
		var ev map[string]any
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatalf("event %s: %v", m.Payload, err)
		}
		if ev["type"] == typ {
			return ev
		}
	}
}
