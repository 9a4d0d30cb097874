package broker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// Conformance mode opens plain MQTT to anyone, so it must never start on a
// listener another machine can reach; the check comes before the store is
// touched.
func TestConformanceRefusedOffLoopback(t *testing.T) {
	cases := []struct {
		name   string
		listen broker.Listen
		// key is the listener the error must name; "" means accepted.
		key string
		// start binds the listeners too (only where the host has them).
		start bool
	}{
		{"all on 127.0.0.1", broker.Listen{MQTT: "127.0.0.1:0", WS: "127.0.0.1:0", HTTP: "127.0.0.1:0"}, "", true},
		{"localhost", broker.Listen{MQTT: "localhost:0", WS: "off", HTTP: "off"}, "", false},
		{"IPv6 loopback", broker.Listen{MQTT: "[::1]:0", WS: "", HTTP: "off"}, "", false},
		{"all but MQTT off", broker.Listen{MQTT: "127.0.0.1:0", WS: "off", HTTP: "off"}, "", true},
		{"MQTT on every interface", broker.Listen{MQTT: ":0", WS: "off", HTTP: "off"}, "listen.mqtt", false},
		{"MQTT on 0.0.0.0", broker.Listen{MQTT: "0.0.0.0:0", WS: "127.0.0.1:0", HTTP: "127.0.0.1:0"}, "listen.mqtt", false},
		{"MQTT on a public address", broker.Listen{MQTT: "192.0.2.1:1883", WS: "off", HTTP: "off"}, "listen.mqtt", false},
		{"MQTT on a host name", broker.Listen{MQTT: "example.com:1883", WS: "off", HTTP: "off"}, "listen.mqtt", false},
		{"WebSocket on every interface", broker.Listen{MQTT: "127.0.0.1:0", WS: ":0", HTTP: "off"}, "listen.ws", false},
		{"HTTP on every interface", broker.Listen{MQTT: "127.0.0.1:0", WS: "127.0.0.1:0", HTTP: ":0"}, "listen.http", false},
		{"HTTP on [::]", broker.Listen{MQTT: "off", WS: "off", HTTP: "[::]:0"}, "listen.http", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := brokertest.Config(dir)
			c.Conformance = true
			c.Listen = tc.listen
			b, err := broker.New(c)
			if tc.key == "" {
				if err != nil {
					t.Fatalf("broker.New: %v", err)
				}
				defer b.Close()
				if tc.start {
					if err := b.Start(); err != nil {
						t.Fatalf("Start: %v", err)
					}
				}
				return
			}
			if err == nil {
				b.Close()
				t.Fatalf("broker.New accepted conformance mode with %s on %+v", tc.key, tc.listen)
			}
			if msg := err.Error(); !strings.Contains(msg, "conformance") || !strings.Contains(msg, tc.key) {
				t.Errorf("error %q does not name conformance and %s", msg, tc.key)
			}
			if _, err := os.Stat(filepath.Join(dir, "imqtt.db")); !os.IsNotExist(err) {
				t.Errorf("a refused configuration created the store (stat: %v)", err)
			}
			// The same configuration with conformance off is fine: the
			// refusal is about conformance mode.
			c.Conformance = false
			if err := c.Validate(); err != nil {
				t.Errorf("without conformance: %v", err)
			}
		})
	}
}

// hdRetain publishes a retained QoS 1 message from a raw connection and
// waits for the PUBACK, returning its reason code.
func hdRetain(t *testing.T, r *brokertest.Raw, topic, payload string) byte {
	t.Helper()
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName: topic, PacketID: 1, Payload: []byte(payload)})
	return r.Expect(packets.Puback).ReasonCode
}

// hdDial connects and fails the test on error.
func hdDial(t *testing.T, b *brokertest.B, o brokertest.Opts) *brokertest.Client {
	t.Helper()
	c, err := b.Dial(o)
	if err != nil {
		t.Fatalf("connect %q: %v", o.ClientID, err)
	}
	t.Cleanup(c.Close)
	return c
}

// hdSub subscribes and fails the test unless the SUBACK code is want.
func hdSub(t *testing.T, c *brokertest.Client, filter string, want byte) {
	t.Helper()
	code, err := c.Subscribe(filter, 1)
	if err != nil || code != want {
		t.Fatalf("%q: subscribe %s: code 0x%02x, %v; want 0x%02x", c.ID, filter, code, err, want)
	}
}

// hdPub publishes at QoS 1 and fails the test unless the (5.0) PUBACK
// reason is want.
func hdPub(t *testing.T, c *brokertest.Client, topic, payload string, want byte) {
	t.Helper()
	r, err := c.Publish(topic, 1, []byte(payload))
	if err != nil || r != want {
		t.Fatalf("%q: publish %s: reason 0x%02x, %v; want 0x%02x", c.ID, topic, r, err, want)
	}
}

// hdWant fails the test unless c's next message is payload on topic.
func hdWant(t *testing.T, c *brokertest.Client, topic, payload string) {
	t.Helper()
	if m := c.Next(t); m.Topic != topic || string(m.Payload) != payload {
		t.Fatalf("%q: got %q on %s, want %q on %s", c.ID, m.Payload, m.Topic, payload, topic)
	}
}

// In conformance mode a plain MQTT test suite runs against the broker: no
// accounts, any client id, any topic, retained messages, wills and shared
// subscriptions.
func TestConformanceMode(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.Conformance = true })
	// Anonymous, an id no IM device could have, and credentials of a user
	// that does not exist.
	anon3 := hdDial(t, b, brokertest.Opts{ClientID: "conf/any id+#"})
	anon5 := hdDial(t, b, brokertest.Opts{V5: true, ClientID: ""})
	stranger := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "stranger", User: "nobody", Password: "whatever"})

	t.Run("wildcard #", func(t *testing.T) {
		sub := hdDial(t, b, brokertest.Opts{ClientID: "hash-3"})
		hdSub(t, sub, "#", 1)
		hdPub(t, anon5, "x/y", "from 5", 0)
		hdWant(t, sub, "x/y", "from 5")
		hdPub(t, stranger, "im/u/bob/res", "plain", 0)
		hdWant(t, sub, "im/u/bob/res", "plain")
	})
	t.Run("single-level wildcard", func(t *testing.T) {
		sub := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "plus-5"})
		hdSub(t, sub, "a/+/c", 1)
		hdPub(t, anon3, "a/b/d", "no", 0)
		hdPub(t, anon3, "a/b/c", "yes", 0)
		hdWant(t, sub, "a/b/c", "yes")
	})
	t.Run("retained", func(t *testing.T) {
		for i, v5 := range []bool{false, true} {
			r := b.Raw(t, v5)
			if ack := r.Connect(brokertest.Opts{ClientID: "retain-" + hdProto(v5), Keepalive: 30}); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			if code := hdRetain(t, r, "r/"+hdProto(v5), "kept"); code != 0 {
				t.Fatalf("retained publish: PUBACK 0x%02x", code)
			}
			// A subscriber that comes later gets it.
			sub := hdDial(t, b, brokertest.Opts{V5: i == 0, ClientID: "late-" + hdProto(v5)})
			hdSub(t, sub, "r/"+hdProto(v5), 1)
			hdWant(t, sub, "r/"+hdProto(v5), "kept")
		}
	})
	t.Run("wills", func(t *testing.T) {
		sub := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "will-watch"})
		hdSub(t, sub, "will/#", 1)
		r := b.Raw(t, false)
		if ack := r.Connect(brokertest.Opts{ClientID: "will-3", Keepalive: 30, WillTopic: "will/3"}); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
		}
		r.Close()
		hdWant(t, sub, "will/3", "gone")
		c5 := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "will-5", WillTopic: "will/5"})
		c5.Drop()
		hdWant(t, sub, "will/5", "gone")
	})
	t.Run("shared subscription", func(t *testing.T) {
		const n = 20
		s3 := hdDial(t, b, brokertest.Opts{ClientID: "share-3"})
		s5 := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "share-5"})
		for _, c := range []*brokertest.Client{s3, s5} {
			hdSub(t, c, "$share/g/s/#", 1)
			hdSub(t, c, "fence", 1)
		}
		for i := range n {
			hdPub(t, anon5, "s/"+string(rune('a'+i)), "x", 0)
		}
		hdPub(t, anon5, "fence", "end", 0)
		// Each subscriber gets the fence after every shared message it
		// was given, as both come from one publisher.
		got := map[string]int{}
		for _, c := range []*brokertest.Client{s3, s5} {
			for {
				m := c.Next(t)
				if m.Topic == "fence" {
					break
				}
				got[m.Topic]++
			}
		}
		if len(got) != n {
			t.Errorf("the group got %d distinct messages of %d: %v", len(got), n, got)
		}
		for topic, k := range got {
			if k != 1 {
				t.Errorf("%s went to %d members of the group, want 1", topic, k)
			}
		}
	})
}

// deny_topics hold in conformance mode: a filter that could match a denied
// topic is refused (# included), publishes there are refused, wills there
// are refused at CONNECT.
func TestConformanceDenyTopics(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Conformance = true
		c.DenyTopics = []string{"secret/#"}
	})
	anon3 := hdDial(t, b, brokertest.Opts{ClientID: "anon-3"})
	anon5 := hdDial(t, b, brokertest.Opts{V5: true, ClientID: "anon-5"})
	for _, f := range []string{"secret/x", "secret/#", "+/x", "#", "$share/g/secret/x"} {
		hdSub(t, anon3, f, 0x80)
		hdSub(t, anon5, f, 0x87)
	}
	sub := hdDial(t, b, brokertest.Opts{ClientID: "watch"})
	hdSub(t, sub, "public/#", 1)
	hdSub(t, sub, "secretive/#", 1)
	hdPub(t, anon5, "secret/a", "no", 0x87)
	hdPub(t, anon3, "secret/b", "no", 0)
	hdPub(t, anon5, "secretive/a", "yes", 0)
	hdWant(t, sub, "secretive/a", "yes")
	t.Run("will refused at CONNECT", func(t *testing.T) {
		for _, tc := range []struct {
			v5   bool
			want byte
		}{{false, 5}, {true, 0x87}} {
			if code := hdConnectErr(t, b, brokertest.Opts{V5: tc.v5, ClientID: "deny-will", WillTopic: "secret/will"}); code != tc.want {
				t.Errorf("%s will on a denied topic: CONNACK 0x%02x, want 0x%02x", hdProto(tc.v5), code, tc.want)
			}
		}
	})
}

// Without conformance: true (the default) none of plain MQTT's openness is
// there.
func TestConformanceOffByDefault(t *testing.T) {
	if broker.Default().Conformance {
		t.Fatal("conformance is on by default")
	}
	b := brokertest.Start(t, nil)
	b.Users("alice")
	for _, v5 := range []bool{false, true} {
		refusedSub, badCreds, badWill := byte(0x80), byte(4), byte(5)
		if v5 {
			refusedSub, badCreds, badWill = 0x87, 0x86, 0x87
		}
		t.Run(hdProto(v5), func(t *testing.T) {
			for _, o := range []brokertest.Opts{
				{V5: v5, ClientID: "anon-" + hdProto(v5)},
				{V5: v5, ClientID: "nobody-" + hdProto(v5), User: "nobody", Password: "whatever"},
			} {
				if code := hdConnectErr(t, b, o); code != badCreds {
					t.Errorf("connect as %q: CONNACK 0x%02x, want 0x%02x", o.User, code, badCreds)
				}
			}
			alice := hdDial(t, b, brokertest.Opts{V5: v5, ClientID: "alice-" + hdProto(v5), User: "alice", Password: "pw-alice"})
			for _, f := range []string{"#", "+/#", "a/+/c", "r/#", "$share/g/s/#", "$share/g/im/u/alice/#", "$SYS/#"} {
				hdSub(t, alice, f, refusedSub)
			}
			if code := hdConnectErr(t, b, brokertest.Opts{V5: v5, ClientID: "alice-will", User: "alice", Password: "pw-alice", WillTopic: "will/a"}); code != badWill {
				t.Errorf("will on a topic that is not open: CONNACK 0x%02x, want 0x%02x", code, badWill)
			}
			// A retained publish is acknowledged (refused messages are) but
			// kept nowhere.
			r := b.Raw(t, v5)
			if ack := r.Connect(brokertest.Opts{ClientID: "alice-raw", User: "alice", Password: "pw-alice", Keepalive: 30}); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			want := byte(0)
			if v5 {
				want = 0x87
			}
			if code := hdRetain(t, r, "r/1", "kept?"); code != want {
				t.Errorf("retained publish on a topic that is not open: PUBACK 0x%02x, want 0x%02x", code, want)
			}
		})
	}
	if n := hdStats(t, b).Broker.Retained; n != 0 {
		t.Errorf("$SYS retained = %d, want 0", n)
	}
}
