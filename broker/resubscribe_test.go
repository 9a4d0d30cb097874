package broker_test

import (
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// A SUBSCRIBE (or UNSUBSCRIBE) whose packet id equals one of the broker's
// unacknowledged deliveries to that client must be granted: MQTT keeps the
// two directions' ids apart, mochi's inflight map does not, and the hook
// steps its delivery aside for the request.
func TestSubscribeWithIDOfPendingDelivery(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			b := brokertest.Start(t, nil)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			r := b.Raw(t, v5)
			if ack := r.Connect(brokertest.Opts{V5: v5, ClientID: "bob-raw", User: "bob", Password: "pw-bob", Keepalive: 30}); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
				Filters: packets.Subscriptions{{Filter: "im/u/bob/dm/#", Qos: 1}}})
			r.Expect(packets.Suback)
			a := b.Connect(t, "alice", v5)
			if _, err := a.Publish("im/dm/bob", 1, []byte(`{"id":"m1","body":"hi"}`)); err != nil {
				t.Fatal(err)
			}
			pub := r.Expect(packets.Publish)
			// Not acknowledged: the delivery stays in flight. Now a
			// SUBSCRIBE and an UNSUBSCRIBE with the same packet id.
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: pub.PacketID,
				Filters: packets.Subscriptions{{Filter: "im/u/bob/ev", Qos: 1}}})
			sa := r.Expect(packets.Suback)
			if len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
				t.Fatalf("SUBACK for packet id %d of a pending delivery: %v, want granted QoS 1", pub.PacketID, sa.ReasonCodes)
			}
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: pub.PacketID,
				Filters: packets.Subscriptions{{Filter: "im/u/bob/ev"}}})
			ua := r.Expect(packets.Unsuback)
			if v5 && (len(ua.ReasonCodes) != 1 || ua.ReasonCodes[0] != 0) {
				t.Fatalf("UNSUBACK: %v, want success", ua.ReasonCodes)
			}
			// The delivery is still tracked: its PUBACK is taken, and
			// the next message follows.
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pub.PacketID})
			if _, err := a.Publish("im/dm/bob", 1, []byte(`{"id":"m2","body":"again"}`)); err != nil {
				t.Fatal(err)
			}
			next := r.Expect(packets.Publish)
			if string(next.Payload) == string(pub.Payload) {
				t.Fatalf("the acknowledged delivery came again: %s", next.Payload)
			}
		})
	}
}
