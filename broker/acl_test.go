package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// chainAbuseFilters are subscriptions a normal user ("mallory") must be
// refused (PROTOCOL.md section 2): everything that could match another
// user's topics, $share on IM topics, the client-publish topics, $SYS, and
// topics that are not open.
var chainAbuseFilters = []string{
	"#",
	"+/#",
	"+",
	"+/+/+/+",
	"+/u/alice/ev",
	"im/#",
	"im/+",
	"im/+/#",
	"im/u/#",
	"im/u/+",
	"im/u/+/#",
	"im/u/+/dm/x",
	"im/u/+/ev",
	"im/u/+/res",
	"im/u/bob/#",
	"im/u/bob/dm/alice",
	"im/u/alice/ev",
	"im/u/alice/res",
	"im/u/alice/+",
	"im/u/mallory", // matches only itself, which is not under im/u/mallory/
	"$share/g/im/u/alice/#",
	"$share/g/im/u/mallory/#", // $share on IM topics, even one's own
	"$share/g/#",
	"$share/g/+/#",
	"$SHARE/g/im/#",
	"im/dm/bob",
	"im/dm/+",
	"im/dm/#",
	"im/g/x",
	"im/g/#",
	"im/req",
	"$SYS/#",
	"$SYS/broker/clients/connected",
	"$share/g/$SYS/#",
	"plain/topic",
	"plain/#",
}

// chainAbuseTopics are topics a client may never publish to (or that are
// not open): each is acknowledged, delivered nowhere, answered with
// not_allowed on the sender's res.
var chainAbuseTopics = []string{
	"im/u/bob/dm/alice",
	"im/u/alice/ev",
	"im/u/alice/res",
	"im/u/mallory/ev",
	"im/u/mallory/res",
	"im/u/mallory/dm/alice",
	"im/other",
	"im/dm",
	"im/dm/",
	"im/dm/Bob",
	"im/dm/bob/x",
	"im/g/",
	"im/req/x",
	"im",
	"plain/topic",
	"$foo/x",
}

// TestChainACLAbuse: mallory tries every refused subscription and publish
// while alice and bob, friends, exchange messages and events. Each attempt
// gets the right code and never a disconnect, and mallory receives nothing
// but its own responses.
func TestChainACLAbuse(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob", "mallory")
			alice := chainConnect(t, b, "alice", v5)
			bob := chainConnect(t, b, "bob", v5)
			chainBefriend(t, alice, bob)
			mallory := chainConnect(t, b, "mallory", v5)
			refused := byte(0x80)
			if v5 {
				refused = 0x87
			}

			// alice and bob talk while mallory works. Each round: a DM
			// each way; every third round also a remove, a request and an
			// accept, for events. Publishes wait for their PUBACK, which
			// follows the broker's handling, so the rounds are ordered.
			stop := make(chan struct{})
			type result struct {
				rounds, cycles int
				err            error
			}
			done := make(chan result, 1)
			go func() {
				var r result
				pub := func(c *brokertest.Client, topic, payload string) bool {
					if code, err := c.Publish(topic, 1, []byte(payload)); err != nil || code != 0 {
						r.err = fmt.Errorf("publish to %s: 0x%02x %v", topic, code, err)
						return false
					}
					return true
				}
				defer func() { done <- r }()
				for {
					select {
					case <-stop:
						if r.rounds >= 10 {
							return
						}
					default:
					}
					r.rounds++
					if !pub(alice.c, "im/dm/bob", fmt.Sprintf(`{"id":"a%d","body":"secret-a-%d"}`, r.rounds, r.rounds)) ||
						!pub(bob.c, "im/dm/alice", fmt.Sprintf(`{"id":"b%d","body":"secret-b-%d"}`, r.rounds, r.rounds)) {
						return
					}
					if r.rounds%3 == 0 {
						if !pub(alice.c, "im/req", `{"rid":"t1","op":"friend.remove","user":"bob"}`) ||
							!pub(bob.c, "im/req", `{"rid":"t2","op":"friend.request","user":"alice","note":"secret-note"}`) ||
							!pub(alice.c, "im/req", `{"rid":"t3","op":"friend.accept","user":"bob"}`) {
							return
						}
						r.cycles++
					}
				}
			}()

			// Own topics are granted, as a control.
			mallory.subscribe("im/u/mallory/ev", 1, 1)
			mallory.subscribe("im/u/mallory/+", 1, 1)
			// Paho 3.1.1 files the SUBACK code of a "$share/{g}/f" filter
			// under "f", where brokertest does not look; a second, raw
			// connection of mallory asks for those.
			raw := b.Raw(t, v5)
			if ca := raw.Connect(brokertest.Opts{User: "mallory", Password: "pw-mallory", ClientID: "mallory-raw"}); ca.ReasonCode != 0 {
				t.Fatalf("raw connect: 0x%02x", ca.ReasonCode)
			}
			for i, f := range chainAbuseFilters {
				var code byte
				if !v5 && strings.HasPrefix(f, "$share/") {
					raw.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: uint16(i + 1),
						Filters: packets.Subscriptions{{Filter: f, Qos: 1}}})
					sa := raw.Expect(packets.Suback)
					if sa.PacketID != uint16(i+1) || len(sa.ReasonCodes) != 1 {
						t.Fatalf("subscribe %q: SUBACK %+v", f, sa)
					}
					code = sa.ReasonCodes[0]
				} else {
					var err error
					if code, err = mallory.c.Subscribe(f, 1); err != nil {
						t.Fatalf("subscribe %q: %v", f, err)
					}
				}
				if code != refused {
					t.Errorf("subscribe %q: SUBACK 0x%02x; want 0x%02x", f, code, refused)
				}
				mallory.alive()
			}
			for _, topic := range chainAbuseTopics {
				mallory.refusedPublish(topic, 1, `{"body":"from mallory"}`, "not_allowed", "", 0x87)
			}
			// QoS 0 gets no acknowledgement, but still the error.
			mallory.refusedPublish("im/u/bob/dm/alice", 0, `{"body":"qos 0"}`, "not_allowed", "", 0x87)
			mallory.refusedPublish("im/u/bob/ev", 0, `{"type":"friend.added","user":"mallory"}`, "not_allowed", "", 0x87)
			// mallory's own channels still work.
			mallory.ok("friend.list")
			mallory.refusedDM("alice", 1, `{"id":"m1","body":"hi"}`, "not_friends", "m1", 0x87)

			close(stop)
			res := <-done
			if res.err != nil {
				t.Fatalf("alice and bob's traffic: %v", res.err)
			}

			// alice and bob got all of it, in order.
			n := uint64(2 * res.rounds)
			for _, d := range []*chainDev{alice, bob} {
				peer := map[string]string{"alice": "bob", "bob": "alice"}[d.user]
				for seq := uint64(1); seq <= n; seq++ {
					if m := d.takeDM(peer); m.Seq != seq {
						t.Fatalf("%s: message %s; want seq %d", d.user, m.Raw, seq)
					}
				}
			}
			for i := 0; i < res.cycles; i++ {
				for _, typ := range []string{"friend.removed", "friend.request", "friend.added"} {
					if e := alice.event(); e.Type != typ {
						t.Fatalf("alice: event %s; want %s", e.Raw, typ)
					}
				}
				for _, typ := range []string{"friend.removed", "friend.added"} {
					if e := bob.event(); e.Type != typ {
						t.Fatalf("bob: event %s; want %s", e.Raw, typ)
					}
				}
			}

			// Nothing of theirs reached mallory: everything mallory ever
			// received is under its own tree, and only responses.
			chainQuiet(t, map[*chainDev][]string{mallory: nil})
			mallory.collect()
			if len(mallory.seen) == 0 {
				t.Fatalf("mallory received nothing at all; the responses are missing")
			}
			for _, m := range mallory.seen {
				if !strings.HasPrefix(m.Topic, "im/u/mallory/") || m.Topic != mallory.resTopic() {
					t.Errorf("mallory received a message on %s: %s", m.Topic, m.Payload)
				}
				if strings.Contains(string(m.Payload), "secret-") {
					t.Errorf("mallory received alice and bob's content on %s: %s", m.Topic, m.Payload)
				}
			}
			mallory.alive()
			// The raw connection got nothing either: the next packet is
			// the answer to a ping.
			raw.Ping()
		})
	}
}

// An operator may subscribe to $SYS/#; a normal user may not. The grant is
// the control that shows the refusal is about the role.
func TestChainSysForOperatorsOnly(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "mallory")
			b.AddUser("root", "pw-root", "operator")
			op := chainConnect(t, b, "root", v5)
			op.subscribe("$SYS/#", 0, 0)
			// mochi publishes $SYS topics retained: the operator gets some.
			m := op.take("$SYS/broker/version")
			if len(m.Payload) == 0 {
				t.Fatalf("empty $SYS/broker/version")
			}
			mallory := chainConnect(t, b, "mallory", v5)
			want := byte(0x80)
			if v5 {
				want = 0x87
			}
			mallory.subscribe("$SYS/#", 0, want)
			mallory.quiet()
		})
	}
}

// TestChainDMRefusals: every reason PROTOCOL.md section 3 gives for refusing
// a DM, on both protocol levels: the error on res with the id when valid,
// the MQTT 5 reason code, no disconnect, nothing stored or delivered.
func TestChainDMRefusals(t *testing.T) {
	const maxPayload = 1024
	big := `{"id":"big","body":"` + strings.Repeat("x", maxPayload) + `"}`
	// Far over the limit, but under the packet cap: still too_large, not a
	// dropped connection.
	huge := `{"id":"huge","body":"` + strings.Repeat("x", 50*maxPayload) + `"}`
	cases := []struct {
		name    string
		peer    string
		qos     byte
		payload string
		code    string
		id      string
		reason  byte
	}{
		{"not friends", "carol", 1, `{"id":"n1","body":"hi"}`, "not_friends", "n1", 0x87},
		{"not friends no id", "carol", 1, `{"body":"hi"}`, "not_friends", "", 0x87},
		{"unknown peer", "zed", 1, `{"id":"u1","body":"hi"}`, "no_such_user", "u1", 0x90},
		{"oneself", "alice", 1, `{"id":"s1","body":"hi"}`, "bad_request", "s1", 0x99},
		{"not JSON", "bob", 1, `hello bob`, "bad_request", "", 0x99},
		{"empty payload", "bob", 1, ``, "bad_request", "", 0x99},
		{"JSON array", "bob", 1, `[{"id":"j1","body":"hi"}]`, "bad_request", "", 0x99},
		{"missing body", "bob", 1, `{"id":"b1"}`, "bad_request", "b1", 0x99},
		{"id too long", "bob", 1, `{"id":"` + strings.Repeat("i", 65) + `","body":"hi"}`, "bad_request", "", 0x99},
		{"id not a string", "bob", 1, `{"id":65,"body":"hi"}`, "bad_request", "", 0x99},
		{"type too long", "bob", 1, `{"id":"t1","body":"hi","type":"` + strings.Repeat("t", 33) + `"}`, "bad_request", "t1", 0x99},
		{"type empty", "bob", 1, `{"id":"t2","body":"hi","type":""}`, "bad_request", "t2", 0x99},
		{"truncated", "bob", 1, `{"id":"tr","body":"hi`, "bad_request", "", 0x99},
		{"binary", "bob", 1, "\x00\xff\xfe\x01", "bad_request", "", 0x99},
		{"over max_payload", "bob", 1, big, "too_large", "", 0x99},
		{"50 x max_payload", "bob", 1, huge, "too_large", "", 0x99},
		{"invalid peer id", "Bob", 1, `{"id":"p1","body":"hi"}`, "not_allowed", "p1", 0x87},
		{"not friends at QoS 0", "carol", 0, `{"id":"q0","body":"hi"}`, "not_friends", "q0", 0x87},
		{"bad payload at QoS 0", "bob", 0, `{"id":"q0b"}`, "bad_request", "q0b", 0x99},
		{"not friends at QoS 2", "carol", 2, `{"id":"q2","body":"hi"}`, "not_friends", "q2", 0x87},
		{"unknown peer at QoS 2", "zed", 2, `{"id":"q2u","body":"hi"}`, "no_such_user", "q2u", 0x90},
	}
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, func(c *broker.Config) { c.MaxPayload = maxPayload }, "alice", "bob", "carol")
			alice := chainConnect(t, b, "alice", v5)
			bob := chainConnect(t, b, "bob", v5)
			carol := chainConnect(t, b, "carol", v5)
			chainBefriend(t, alice, bob)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					alice.t = t
					defer func() { alice.t = nil }()
					alice.refusedDM(c.peer, c.qos, c.payload, c.code, c.id, c.reason)
				})
			}
			alice.t = t
			// Nothing was delivered to anyone, and nothing stored: the
			// first accepted DM is seq 1 on both sides.
			chainQuiet(t, map[*chainDev][]string{bob: nil, carol: nil, alice: {alice.dmTopic("bob"), alice.dmTopic("carol"), alice.dmTopic("alice")}})
			chainSendDM(t, alice, bob, "fine", 1)
			// A payload of exactly max_payload bytes is accepted.
			exact := `{"id":"exact","body":"` + strings.Repeat("y", maxPayload-len(`{"id":"exact","body":""}`)) + `"}`
			if ack := alice.dm("bob", 1, exact); ack != 0 {
				t.Fatalf("payload of exactly max_payload: 0x%02x", ack)
			}
			if m := bob.takeDM("alice"); m.ID != "exact" || m.Seq != 2 {
				t.Fatalf("bob got %.80s; want id exact seq 2", m.Raw)
			}
			alice.alive()
		})
	}
}

// With dm_policy anyone, strangers may DM; blocks still hold, and not_friends
// is never the answer.
func TestChainDMPolicyAnyone(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, func(c *broker.Config) { c.DMPolicy = "anyone" }, "alice", "carol")
			alice := chainConnect(t, b, "alice", v5)
			carol := chainConnect(t, b, "carol", v5)
			chainSendDM(t, alice, carol, "hello-stranger", 1)
			chainSendDM(t, carol, alice, "hello-back", 2)
			carol.ok("block.add", "user", "alice")
			alice.refusedDM("carol", 1, `{"id":"x1","body":"hi"}`, "not_allowed", "x1", 0x87)
			carol.refusedDM("alice", 1, `{"id":"x2","body":"hi"}`, "not_allowed", "x2", 0x87)
			alice.refusedDM("alice", 1, `{"id":"x3","body":"hi"}`, "bad_request", "x3", 0x99)
			alice.refusedDM("zed", 1, `{"id":"x4","body":"hi"}`, "no_such_user", "x4", 0x90)
			carol.ok("block.remove", "user", "alice")
			chainSendDM(t, alice, carol, "again", 3)
		})
	}
}

// A retained IM publish is stored nowhere: a device that subscribes later
// gets no retained copy, of an accepted message or of a refused publish.
func TestChainRetainIgnoredOnIM(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob", "mallory")
			alice := chainConnect(t, b, "alice", v5)
			bob := chainConnect(t, b, "bob", v5)
			chainBefriend(t, alice, bob)

			retained := func(user, topic, payload string, wantReason byte) {
				t.Helper()
				r := b.Raw(t, v5)
				if ca := r.Connect(brokertest.Opts{User: user, Password: "pw-" + user, ClientID: user + "-raw"}); ca.ReasonCode != 0 {
					t.Fatalf("raw connect %s: 0x%02x", user, ca.ReasonCode)
				}
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, PacketID: 7, TopicName: topic, Payload: []byte(payload)})
				ack := r.Expect(packets.Puback)
				if ack.PacketID != 7 || (v5 && ack.ReasonCode != wantReason) {
					t.Fatalf("retained publish to %s: PUBACK id %d reason 0x%02x; want id 7 reason 0x%02x", topic, ack.PacketID, ack.ReasonCode, wantReason)
				}
				r.Close()
			}
			retained("alice", "im/dm/bob", `{"id":"r1","body":"retained?"}`, 0)
			for _, d := range []*chainDev{bob, alice} {
				if m := d.takeDM(map[string]string{"alice": "bob", "bob": "alice"}[d.user]); m.ID != "r1" || m.Seq != 1 {
					t.Fatalf("%s got %s; want the message r1 as seq 1", d.user, m.Raw)
				}
			}
			retained("mallory", "im/u/bob/ev", `{"type":"friend.added","user":"mallory"}`, 0x87)
			retained("mallory", "im/u/bob/dm/alice", `{"body":"fake"}`, 0x87)
			retained("mallory", "im/u/mallory/ev", `{"body":"mine"}`, 0x87)

			// New devices (a first connection starts at "now", so no
			// backlog either) subscribe after the fact: nothing comes.
			bob2 := chainConnectAs(t, b, "bob", "bob-new", v5)
			mallory2 := chainConnectAs(t, b, "mallory", "mallory-new", v5)
			chainQuiet(t, map[*chainDev][]string{bob2: nil, mallory2: nil, bob: {bob.evTopic()}})
			// Fence: the new device does receive what comes next.
			chainSendDM(t, alice, bob2, "r2", 2)
		})
	}
}

// A publish to $SYS/... by a client must be refused like any forbidden
// topic: acknowledged, with not_allowed on res. mochi drops it before any
// hook runs (IsValidFilter in processPublish), without an acknowledgement.
func TestChainSysPublishAcknowledged(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			b := chainStart(t, nil, "mallory")
			mallory := chainConnect(t, b, "mallory", v5)
			for _, topic := range []string{"$SYS/x", "$SYS/broker/version", "$sys/x"} {
				mallory.refusedPublish(topic, 1, `{"body":"x"}`, "not_allowed", "", 0x87)
			}
		})
	}
}

// A refused QoS 2 publish on MQTT 5 is answered with a PUBREC carrying an
// error reason, which ends the exchange: the client sends no PUBREL. The
// broker must not count it against the client's receive maximum, or the
// 257th refusal disconnects a well-behaved client.
func TestChainRefusedQoS2DoesNotExhaustReceiveMaximum(t *testing.T) {
	b := chainStart(t, nil, "alice")
	alice := chainConnect(t, b, "alice", true)
	for i := 1; i <= 300; i++ {
		ack, err := alice.c.Publish("im/dm/zed", 2, []byte(fmt.Sprintf(`{"id":"m%d","body":1}`, i)))
		if err != nil || ack != 0x90 {
			t.Fatalf("refused QoS 2 publish %d: reason 0x%02x, %v; want 0x90", i, ack, err)
		}
	}
	alice.alive()
}

// A publish to a forbidden topic whose payload holds a valid message id
// gets the id echoed, as PROTOCOL.md section 3 says for every refusal.
func TestChainTopicRefusalEchoesID(t *testing.T) {
	b := chainStart(t, nil, "mallory")
	mallory := chainConnect(t, b, "mallory", true)
	mallory.refusedPublish("im/u/bob/dm/alice", 1, `{"id":"x1","body":"hi"}`, "not_allowed", "x1", 0x87)
}

// A refused publish never costs a 3.1.1 client its connection, even many in
// a row at every QoS.
func TestChainRefusalsKeepConnection(t *testing.T) {
	b := chainStart(t, nil, "alice", "bob")
	alice := chainConnect(t, b, "alice", false)
	bob := chainConnect(t, b, "bob", false)
	for i := 0; i < 30; i++ {
		qos := byte(i % 3)
		alice.refusedPublish("im/u/bob/ev", qos, `{"body":"x"}`, "not_allowed", "", 0)
		alice.refusedDM("bob", qos, fmt.Sprintf(`{"id":"n%d","body":"x"}`, i), "not_friends", fmt.Sprintf("n%d", i), 0)
	}
	chainBefriend(t, alice, bob)
	chainSendDM(t, alice, bob, "still-here", 1)
}
