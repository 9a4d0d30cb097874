package broker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// sgBacklog makes alice's device "alice-phone" known, takes it offline and
// leaves it a backlog of mixed topics: DMs b1..b3 from bob, c1..c2 from
// carol, then a friend.request event from dave.
func sgBacklog(t *testing.T, b *brokertest.B, v5 bool) {
	t.Helper()
	b.Users("alice", "bob", "carol", "dave")
	b.MakeFriends(t, "alice", "bob")
	b.MakeFriends(t, "alice", "carol")
	first := dlvDevice(t, b, "alice", "alice-phone", v5, false)
	dlvOffline(t, first)
	bob := dlvDial(t, b, "bob", "bob-dev", false, false)
	carol := dlvDial(t, b, "carol", "carol-dev", false, false)
	for i := 1; i <= 3; i++ {
		dlvSend(t, bob, "alice", fmt.Sprintf(`{"id":"b%d","body":"from bob"}`, i))
		if i <= 2 {
			dlvSend(t, carol, "alice", fmt.Sprintf(`{"id":"c%d","body":"from carol"}`, i))
		}
	}
	dave := dlvDial(t, b, "dave", "dave-dev", false, false)
	if code, err := dave.Publish("im/req", 1, []byte(`{"rid":"r1","op":"friend.request","user":"alice"}`)); err != nil || code != 0 {
		t.Fatalf("friend.request: code 0x%02x, %v", code, err)
	}
	// The event is in alice's stream once dave's response is out.
	brokertest.Eventually(t, "the friend request stored", func() bool { return dlvStreamHead(t, b, "alice") >= 6 })
}

// A client that subscribes topic by topic, one SUBSCRIBE each and res
// first (paho's Subscribe per filter does this), gets its whole backlog:
// entries its first subscriptions do not match wait for the later ones
// instead of being passed over. PROTOCOL.md section 4: on its next
// connection, as soon as it subscribes to its topics, every message and
// stored event that arrived while it was away.
func TestBacklogReachesTopicByTopicSubscriber(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			t.Parallel()
			b := brokertest.Start(t, dlvConfig)
			sgBacklog(t, b, v5)

			alice := dlvDial(t, b, "alice", "alice-phone", v5, false)
			for _, f := range []string{"im/u/alice/res", "im/u/alice/dm/carol", "im/u/alice/dm/bob", "im/u/alice/ev"} {
				if code, err := alice.Subscribe(f, 1); err != nil || code != 1 {
					t.Fatalf("subscribe %s: code 0x%02x, %v", f, code, err)
				}
			}
			got := map[string][]string{}
			for n := 0; n < 6; n++ {
				m := alice.Next(t)
				var p struct {
					ID   string `json:"id"`
					Type string `json:"type"`
					From string `json:"from"`
				}
				if err := json.Unmarshal(m.Payload, &p); err != nil {
					t.Fatalf("%s: %v", m.Payload, err)
				}
				if m.Topic == "im/u/alice/ev" {
					got[m.Topic] = append(got[m.Topic], p.Type+" from "+p.From)
				} else {
					got[m.Topic] = append(got[m.Topic], p.ID)
				}
			}
			want := map[string][]string{
				"im/u/alice/dm/bob":   {"b1", "b2", "b3"},
				"im/u/alice/dm/carol": {"c1", "c2"},
				"im/u/alice/ev":       {"friend.request from dave"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("backlog by topic:\n got  %v\n want %v", got, want)
			}
			alice.Quiet(t, 200*time.Millisecond)
		})
	}
}

// After the grace, an entry that no subscription matches is passed over
// (as plain MQTT does for topics one is not subscribed to), so a device
// that only wants some topics is not held up for ever, and what it did not
// subscribe to is not sent later.
func TestUnsubscribedBacklogPassedOverAfterGrace(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		dlvConfig(c)
		c.SubscribeGrace = 300 * time.Millisecond
	})
	sgBacklog(t, b, true)

	alice := dlvDial(t, b, "alice", "alice-phone", true, false)
	if code, err := alice.Subscribe("im/u/alice/dm/carol", 1); err != nil || code != 1 {
		t.Fatalf("subscribe: code 0x%02x, %v", code, err)
	}
	// b1 is first in the stream and waits out the grace; then carol's
	// messages come, and nothing else.
	for _, id := range []string{"c1", "c2"} {
		if m := dlvNext(t, alice, dlvTopic("alice", "carol")); m.ID != id {
			t.Fatalf("got %s, want %s", m.raw, id)
		}
	}
	alice.Quiet(t, 200*time.Millisecond)
	// Everything up to dave's event has been passed over and acknowledged:
	// a reconnect subscribed to everything gets only what is new.
	alice.Close()
	alice = dlvDevice(t, b, "alice", "alice-phone", true, false)
	carol := dlvDial(t, b, "carol", "carol-dev2", false, false)
	dlvSend(t, carol, "alice", `{"id":"c3","body":"new"}`)
	if m := alice.Next(t); m.Topic != dlvTopic("alice", "carol") || dlvDecode(t, m.Payload).ID != "c3" {
		t.Fatalf("after reconnect got %s %s, want only the new c3", m.Topic, m.Payload)
	}
}

// With subscribe_grace 0 nothing waits: entries no subscription matches are
// passed over at once, as before the grace existed.
func TestSubscribeGraceZero(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		dlvConfig(c)
		c.SubscribeGrace = 0
	})
	sgBacklog(t, b, false)
	alice := dlvDial(t, b, "alice", "alice-phone", false, false)
	if code, err := alice.Subscribe("im/u/alice/res", 1); err != nil || code != 1 {
		t.Fatalf("subscribe: code 0x%02x, %v", code, err)
	}
	// Passed over: the device's cursor reaches the stream head without a
	// single delivery.
	head := dlvStreamHead(t, b, "alice")
	brokertest.Eventually(t, "the cursor at the stream head", func() bool { return sgCursor(t, b, "alice-phone") == head })
	if code, err := alice.Subscribe("im/u/alice/#", 1); err != nil || code != 1 {
		t.Fatalf("subscribe: code 0x%02x, %v", code, err)
	}
	alice.Quiet(t, 200*time.Millisecond)
}

// sgCursor is the device's cursor as stored (flushed every 200 ms).
func sgCursor(t *testing.T, b *brokertest.B, clientID string) uint64 {
	t.Helper()
	c, err := b.Store().Cursor(clientID)
	if err != nil {
		t.Fatalf("cursor of %s: %v", clientID, err)
	}
	return c
}

// Only the backlog waits: an entry that arrives while the device is online
// and matches none of its subscriptions is passed over at once, so a device
// subscribed to part of its tree is not held up by live traffic it does not
// want. (With a one-minute grace, a held entry would hold the DM behind it
// past the test's timeout.)
func TestLiveEntriesNotHeld(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		dlvConfig(c)
		c.SubscribeGrace = time.Minute
	})
	b.Users("alice", "carol", "dave")
	b.MakeFriends(t, "alice", "carol")
	alice := dlvDial(t, b, "alice", "alice-phone", true, false)
	if code, err := alice.Subscribe("im/u/alice/dm/carol", 1); err != nil || code != 1 {
		t.Fatalf("subscribe: code 0x%02x, %v", code, err)
	}
	dave := dlvDial(t, b, "dave", "dave-dev", false, false)
	if code, err := dave.Publish("im/req", 1, []byte(`{"rid":"r1","op":"friend.request","user":"alice"}`)); err != nil || code != 0 {
		t.Fatalf("friend.request: code 0x%02x, %v", code, err)
	}
	brokertest.Eventually(t, "the friend request stored", func() bool { return dlvStreamHead(t, b, "alice") >= 1 })
	carol := dlvDial(t, b, "carol", "carol-dev", false, false)
	dlvSend(t, carol, "alice", `{"id":"live","body":"after an event alice did not subscribe to"}`)
	if m := dlvNext(t, alice, dlvTopic("alice", "carol")); m.ID != "live" {
		t.Fatalf("got %s, want the live DM", m.raw)
	}
}
