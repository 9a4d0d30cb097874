package broker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// protoVersions are the two protocol levels every connect rule is checked on.
var protoVersions = []struct {
	name string
	v5   bool
}{{"3.1.1", false}, {"5.0", true}}

// connackCode picks the CONNACK code of PROTOCOL.md section 1 for the version.
func connackCode(v5 bool, v311, v50 byte) byte {
	if v5 {
		return v50
	}
	return v311
}

// wantConnackRefused fails the test unless err is a refused CONNECT with code want.
func wantConnackRefused(t *testing.T, err error, want byte) {
	t.Helper()
	var ce *brokertest.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("want CONNACK code 0x%02x, got %v", want, err)
	}
	if ce.Code != want {
		t.Fatalf("CONNACK code 0x%02x, want 0x%02x", ce.Code, want)
	}
}

// dialCleanup connects with o, failing the test on error, and disconnects when
// the test ends.
func dialCleanup(t *testing.T, b *brokertest.B, o brokertest.Opts) *brokertest.Client {
	t.Helper()
	c, err := b.Dial(o)
	if err != nil {
		t.Fatalf("connect %s as %s: %v", o.ClientID, o.User, err)
	}
	t.Cleanup(c.Close)
	return c
}

// storeToken stores a new device token for user and returns the token string.
func storeToken(t *testing.T, b *brokertest.B, user string) string {
	t.Helper()
	id, token, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Store().CreateToken(storage.Token{ID: id, User: user, Name: "phone", Hash: hash}); err != nil {
		t.Fatal(err)
	}
	return token
}

// tamperToken changes one character in the middle of the token's secret, so the
// result still parses as a token and only the secret check can refuse it.
func tamperToken(token string) string {
	i := len(token) - 10
	c := byte('A')
	if token[i] == c {
		c = 'B'
	}
	return token[:i] + string(c) + token[i+1:]
}

func TestAuthentication(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice", "bob")
	token := storeToken(t, b, "alice")
	_, unstored, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, user, password string
		ok                   bool
	}{
		{"password", "alice", "pw-alice", true},
		{"device token", "alice", token, true},
		{"wrong password", "alice", "pw-bob", false},
		{"empty password", "alice", "", false},
		{"unknown user", "zed", "pw-zed", false},
		{"no credentials", "", "", false},
		{"password without user name", "", "pw-alice", false},
		{"upper-case user name", "Bob", "pw-bob", false},
		{"wildcard in user name", "a+b", "pw-a+b", false},
		{"hash in user name", "a#", "pw-a#", false},
		{"slash in user name", "bob/x", "pw-bob", false},
		{"tampered token", "alice", tamperToken(token), false},
		{"unknown token", "alice", unstored, false},
		{"token of another user", "bob", token, false},
	}
	for _, v := range protoVersions {
		for i, tc := range cases {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				clientID := fmt.Sprintf("auth-%t-%d", v.v5, i)
				c, err := b.Dial(brokertest.Opts{V5: v.v5, ClientID: clientID, User: tc.user, Password: tc.password})
				if !tc.ok {
					wantConnackRefused(t, err, connackCode(v.v5, 4, 0x86))
					return
				}
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer c.Close()
				// The session belongs to the authenticated user: its own tree
				// is allowed, another user's is not.
				if got, err := c.Subscribe("im/u/"+tc.user+"/#", 1); err != nil || got != 1 {
					t.Fatalf("subscribe own tree: code 0x%02x, err %v", got, err)
				}
				for _, f := range []string{"im/u/bob/#", "#"} {
					if got, err := c.Subscribe(f, 1); err != nil || got < 0x80 {
						t.Fatalf("subscribe %s: code 0x%02x, err %v; want refused", f, got, err)
					}
				}
			})
		}
	}
}

func TestClientIDOfAnotherUserRefused(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.OpenTopics = []string{"telemetry/#"} })
	b.Users("alice", "bob", "carol")
	carol := b.Connect(t, "carol", true)
	for _, owner := range protoVersions {
		for _, intruder := range protoVersions {
			for _, persistent := range []bool{false, true} {
				name := fmt.Sprintf("owner %s/intruder %s/persistent %t", owner.name, intruder.name, persistent)
				t.Run(name, func(t *testing.T) {
					clientID := fmt.Sprintf("phone-%t-%t-%t", owner.v5, intruder.v5, persistent)
					topic := "telemetry/" + clientID
					a, err := b.Dial(brokertest.Opts{V5: owner.v5, ClientID: clientID, User: "alice", Password: "pw-alice"})
					if err != nil {
						t.Fatal(err)
					}
					defer a.Close()
					if got, err := a.Subscribe(topic, 1); err != nil || got != 1 {
						t.Fatalf("subscribe: code 0x%02x, err %v", got, err)
					}
					_, err = b.Dial(brokertest.Opts{V5: intruder.v5, ClientID: clientID, User: "bob", Password: "pw-bob", Persistent: persistent})
					wantConnackRefused(t, err, connackCode(intruder.v5, 2, 0x85))

					if _, err := carol.Publish(topic, 1, []byte("after")); err != nil {
						t.Fatal(err)
					}
					if m := a.NextOn(t, topic); string(m.Payload) != "after" {
						t.Fatalf("alice got %q", m.Payload)
					}
					select {
					case <-a.Gone():
						t.Fatal("alice's connection ended")
					default:
					}
				})
			}
		}
	}
}

// An offline persistent session keeps its queued messages for its own user
// only.
func TestClientIDOfAnotherUserKeepsQueue(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.OpenTopics = []string{"telemetry/#"} })
	b.Users("alice", "bob", "carol")
	carol := b.Connect(t, "carol", true)
	for _, v := range protoVersions {
		t.Run(v.name, func(t *testing.T) {
			clientID := "tablet-" + v.name
			topic := "telemetry/queue-" + v.name
			alice := brokertest.Opts{V5: v.v5, ClientID: clientID, User: "alice", Password: "pw-alice", Persistent: true}
			a, err := b.Dial(alice)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := a.Subscribe(topic, 1); err != nil || got != 1 {
				t.Fatalf("subscribe: code 0x%02x, err %v", got, err)
			}
			a.Close()
			if _, err := carol.Publish(topic, 1, []byte("queued")); err != nil {
				t.Fatal(err)
			}

			_, err = b.Dial(brokertest.Opts{V5: v.v5, ClientID: clientID, User: "bob", Password: "pw-bob", Persistent: true})
			wantConnackRefused(t, err, connackCode(v.v5, 2, 0x85))

			a, err = b.Dial(alice)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if m := a.NextOn(t, topic); string(m.Payload) != "queued" {
				t.Fatalf("alice got %q", m.Payload)
			}
		})
	}
}

func TestClientIDTakeoverBySameUser(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice")
	for _, first := range protoVersions {
		for _, second := range protoVersions {
			t.Run(first.name+" then "+second.name, func(t *testing.T) {
				clientID := fmt.Sprintf("laptop-%t-%t", first.v5, second.v5)
				o := brokertest.Opts{ClientID: clientID, User: "alice", Password: "pw-alice"}
				o.V5 = first.v5
				old, err := b.Dial(o)
				if err != nil {
					t.Fatal(err)
				}
				defer old.Close()
				o.V5 = second.v5
				cur, err := b.Dial(o)
				if err != nil {
					t.Fatalf("takeover by the same user: %v", err)
				}
				defer cur.Close()
				select {
				case <-old.Gone():
				case <-time.After(brokertest.Timeout):
					t.Fatal("the taken-over connection is still open")
				}
				if got, err := cur.Subscribe("im/u/alice/#", 1); err != nil || got != 1 {
					t.Fatalf("subscribe after takeover: code 0x%02x, err %v", got, err)
				}
			})
		}
	}
}

func TestEmptyClientID(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice", "bob")

	t.Run("3.1.1 persistent refused", func(t *testing.T) {
		r := b.Raw(t, false)
		ack := r.Connect(brokertest.Opts{User: "alice", Password: "pw-alice", Persistent: true, Keepalive: 30})
		if ack.ReasonCode != 2 {
			t.Fatalf("CONNACK return code %d, want 2", ack.ReasonCode)
		}
		r.Closed()
	})
	t.Run("3.1.1 clean accepted", func(t *testing.T) {
		r := b.Raw(t, false)
		if ack := r.Connect(brokertest.Opts{User: "alice", Password: "pw-alice", Keepalive: 30}); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK return code %d, want 0", ack.ReasonCode)
		}
		r.Ping()
	})
	t.Run("5.0 assigned and bound", func(t *testing.T) {
		r := b.Raw(t, true)
		ack := r.Connect(brokertest.Opts{User: "alice", Password: "pw-alice", Keepalive: 30})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK reason 0x%02x, want 0", ack.ReasonCode)
		}
		id := ack.Properties.AssignedClientID
		if id == "" {
			t.Fatal("CONNACK carries no assigned client id")
		}
		r.Ping()
		// The assigned id is bound to alice like any other.
		_, err := b.Dial(brokertest.Opts{V5: true, ClientID: id, User: "bob", Password: "pw-bob"})
		wantConnackRefused(t, err, 0x85)
	})
}

func TestWillAtConnect(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.OpenTopics = []string{"telemetry/#"} })
	b.Users("alice", "bob")
	cases := []struct {
		name, topic string
		ok          bool
	}{
		{"DM topic", "im/dm/bob", false},
		{"own inbox", "im/u/alice/ev", false},
		{"other user's inbox", "im/u/bob/ev", false},
		{"request topic", "im/req", false},
		{"topic not open", "news/today", false},
		{"$SYS", "$SYS/broker/clients", false},
		{"open topic", "telemetry/alice/status", true},
	}
	for _, v := range protoVersions {
		for i, tc := range cases {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				c, err := b.Dial(brokertest.Opts{V5: v.v5, ClientID: fmt.Sprintf("will-%t-%d", v.v5, i),
					User: "alice", Password: "pw-alice", WillTopic: tc.topic})
				if !tc.ok {
					wantConnackRefused(t, err, connackCode(v.v5, 5, 0x87))
					return
				}
				if err != nil {
					t.Fatalf("connect with will on %s: %v", tc.topic, err)
				}
				c.Close()
			})
		}
	}
}

// A will on an open topic is published when the link is lost, as in plain
// MQTT.
func TestWillOnOpenTopicPublished(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.OpenTopics = []string{"telemetry/#"} })
	b.Users("alice", "bob")
	bob := b.Connect(t, "bob", true)
	if got, err := bob.Subscribe("telemetry/#", 1); err != nil || got != 1 {
		t.Fatalf("subscribe: code 0x%02x, err %v", got, err)
	}
	for _, v := range protoVersions {
		t.Run(v.name, func(t *testing.T) {
			topic := "telemetry/alice/" + v.name
			r := b.Raw(t, v.v5)
			ack := r.Connect(brokertest.Opts{ClientID: "sensor-" + v.name, User: "alice", Password: "pw-alice", Keepalive: 30, WillTopic: topic})
			if ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			r.Close()
			if m := bob.NextOn(t, topic); string(m.Payload) != "gone" {
				t.Fatalf("will payload %q", m.Payload)
			}
		})
	}
}

func TestConnackProperties(t *testing.T) {
	const maxKeepalive = 120
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MaxKeepalive = maxKeepalive
		c.MaxPayload = 2048
	})
	b.Users("alice")
	cases := []struct {
		name      string
		keepalive uint16
		// want is the keepalive in force; server says whether CONNACK must
		// carry it as Server Keep Alive.
		want   uint16
		server bool
	}{
		{"keepalive 0", 0, maxKeepalive, true},
		{"keepalive 65535", 65535, maxKeepalive, true},
		{"keepalive above cap", maxKeepalive + 1, maxKeepalive, true},
		{"keepalive within cap", 60, 60, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := b.Raw(t, true)
			ack := r.Connect(brokertest.Opts{ClientID: fmt.Sprintf("ka-%d", i), User: "alice", Password: "pw-alice", Keepalive: tc.keepalive})
			if ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			p := ack.Properties
			if p.ServerKeepAliveFlag != tc.server || (tc.server && p.ServerKeepAlive != tc.want) {
				t.Fatalf("Server Keep Alive: flag %t value %d, want flag %t value %d", p.ServerKeepAliveFlag, p.ServerKeepAlive, tc.server, tc.want)
			}
			// Room to read (and refuse with too_large) a payload well
			// over max_payload, bounded so a client cannot make the
			// broker read arbitrarily large packets.
			if p.MaximumPacketSize < 2*2048 || p.MaximumPacketSize > 2048+64<<10+4096 {
				t.Fatalf("Maximum Packet Size %d, want between 2 x max_payload 2048 and 2048 + 68 KiB", p.MaximumPacketSize)
			}
		})
	}
}

// The advertised Maximum Packet Size is the one enforced: a packet of
// exactly that size is accepted, a larger one ends the connection.
func TestMaximumPacketSizeEnforced(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MaxPayload = 1024
		c.OpenTopics = []string{"telemetry/#"}
	})
	b.Users("alice")
	r := b.Raw(t, true)
	ack := r.Connect(brokertest.Opts{ClientID: "big", User: "alice", Password: "pw-alice", Keepalive: 30})
	max := int(ack.Properties.MaximumPacketSize)
	if ack.ReasonCode != 0 || max == 0 {
		t.Fatalf("CONNACK 0x%02x, Maximum Packet Size %d", ack.ReasonCode, max)
	}
	publish := func(size int) packets.Packet {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "telemetry/big"}
		pk.Payload = make([]byte, size-len(brokertest.Encode(t, 5, pk)))
		for len(brokertest.Encode(t, 5, pk)) > size {
			pk.Payload = pk.Payload[1:]
		}
		return pk
	}
	pk := publish(max)
	if n := len(brokertest.Encode(t, 5, pk)); n != max {
		t.Fatalf("built a packet of %d bytes, want %d", n, max)
	}
	r.Send(pk)
	r.Expect(packets.Puback)
	r.Send(publish(max + 512))
	r.Closed()
}
