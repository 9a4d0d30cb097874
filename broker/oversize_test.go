package broker_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// osPublish is a QoS 1 DM to bob with a body of n bytes.
func osPublish(pid uint16, n int) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "im/dm/bob",
		PacketID:    pid,
		Payload:     []byte(`{"id":"big","body":"` + strings.Repeat("x", n) + `"}`),
	}
}

// osExpect reads until the PUBACK of pid and the error on res, and returns
// the error code; it fails on a dropped connection.
func osExpect(t *testing.T, read func() (packets.Packet, error), pid uint16) string {
	t.Helper()
	var acked bool
	var code string
	for !acked || code == "" {
		pk, err := read()
		if err != nil {
			t.Fatalf("connection ended (acked %v, error %q): %v", acked, code, err)
		}
		switch {
		case pk.FixedHeader.Type == packets.Puback && pk.PacketID == pid:
			acked = true
		case pk.FixedHeader.Type == packets.Publish && pk.TopicName == "im/u/alice/res":
			var r struct {
				OK    bool `json:"ok"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(pk.Payload, &r); err != nil || r.OK {
				t.Fatalf("res: %s", pk.Payload)
			}
			code = r.Error.Code
		}
	}
	return code
}

// An MQTT 3.1.1 client cannot be told the maximum packet size. A publish
// over it, however large, is read past (not into memory) and refused like
// any too-large message: acknowledged, too_large on res, the connection
// kept, so the client does not reconnect and resend it for ever. A packet
// over the cap is cut into pieces on the wire here, as a slow link would.
func TestOversizedPublishRefusedOn311(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxPayload = 1024 })
	b.Users("alice", "bob")
	b.MakeFriends(t, "alice", "bob")
	bob := dlvDevice(t, b, "bob", "bob-dev", false, false)

	r := b.Raw(t, false)
	if ack := r.Connect(brokertest.Opts{ClientID: "alice-raw", User: "alice", Password: "pw-alice", Keepalive: 30}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "im/u/alice/#", Qos: 1}}})
	r.Expect(packets.Suback)

	for i, n := range []int{2 << 20, 200 << 10} {
		wire := brokertest.Encode(t, 4, osPublish(uint16(10+i), n))
		for len(wire) > 0 {
			k := min(len(wire), 7919)
			r.Write(wire[:k])
			wire = wire[k:]
		}
		if code := osExpect(t, r.Read, uint16(10+i)); code != "too_large" {
			t.Fatalf("%d-byte body: error %q, want too_large", n, code)
		}
	}
	// The connection still works, and nothing reached bob.
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "im/dm/bob",
		PacketID: 20, Payload: []byte(`{"id":"small","body":"hi"}`)})
	if m := dlvNext(t, bob, dlvTopic("bob", "alice")); m.ID != "small" {
		t.Fatalf("bob got %s, want only the small message", m.raw)
	}
}

// The same over WebSocket, where the packet also streams through: a
// WebSocket message far over the maximum does not end the connection.
func TestOversizedPublishRefusedOn311WebSocket(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxPayload = 1024 })
	b.Users("alice", "bob")
	b.MakeFriends(t, "alice", "bob")
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: brokertest.Timeout}
	ws, _, err := d.Dial("ws://"+b.Addr("ws")+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	send := func(pk packets.Packet) {
		t.Helper()
		if err := ws.WriteMessage(websocket.BinaryMessage, brokertest.Encode(t, 4, pk)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	read := func() (packets.Packet, error) {
		for {
			if pk, ok := osDecode(t, &buf); ok {
				return pk, nil
			}
			_ = ws.SetReadDeadline(time.Now().Add(brokertest.Timeout))
			_, p, err := ws.ReadMessage()
			if err != nil {
				return packets.Packet{}, err
			}
			buf.Write(p)
		}
	}
	send(brokertest.ConnectPacket(brokertest.Opts{ClientID: "alice-ws", User: "alice", Password: "pw-alice", Keepalive: 30}))
	if pk, err := read(); err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v, %v", pk, err)
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "im/u/alice/#", Qos: 1}}})
	send(osPublish(10, 1<<20))
	if code := osExpect(t, read, 10); code != "too_large" {
		t.Fatalf("error %q, want too_large", code)
	}
}

// osDecode takes one whole MQTT 3.1.1 packet off the front of buf.
func osDecode(t *testing.T, buf *bytes.Buffer) (packets.Packet, bool) {
	t.Helper()
	b := buf.Bytes()
	if len(b) < 2 {
		return packets.Packet{}, false
	}
	n, mult, i := 0, 1, 1
	for ; i < len(b) && i <= 4; i++ {
		n += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			break
		}
		mult *= 128
	}
	if i >= len(b) || len(b) < i+1+n {
		return packets.Packet{}, false
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b[0]); err != nil {
		t.Fatal(err)
	}
	fh.Remaining = n
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	body := b[i+1 : i+1+n]
	var err error
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	if err != nil {
		t.Fatalf("decode type %d: %v", fh.Type, err)
	}
	buf.Next(i + 1 + n)
	return pk, true
}
