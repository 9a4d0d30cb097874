package broker_test

import (
	"encoding/json"
	"fmt"
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
