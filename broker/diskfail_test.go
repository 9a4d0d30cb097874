package broker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"syscall"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// hdPublish is a QoS 1 PUBLISH of a DM to peer with message id, as a raw
// client sends it.
func hdPublish(peer, id string, pid uint16, dup bool) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: dup},
		TopicName:   "im/dm/" + peer,
		PacketID:    pid,
		Payload:     []byte(fmt.Sprintf(`{"id":%q,"body":"hello"}`, id)),
	}
}

// A full or failing disk during a commit: the publish is refused and not
// acknowledged as stored, nothing is stored, reads go on, and sending works
// again once the disk does.
func TestDiskErrorDuringCommit(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice", "bob")
	b.MakeFriends(t, "alice", "bob")
	bob := hdConnect(t, b, "bob", "bob-dev", true)
	a5 := hdConnect(t, b, "alice", "alice-5", true)
	before := a5.sendDM("bob", "before")
	if !before.accepted {
		t.Fatalf("the first message was refused: %+v", before)
	}
	alice3 := brokertest.Opts{ClientID: "alice-3", User: "alice", Password: "pw-alice", Keepalive: 30}
	r3 := b.Raw(t, false)
	if ack := r3.Connect(alice3); ack.ReasonCode != 0 {
		t.Fatalf("3.1.1 CONNACK 0x%02x", ack.ReasonCode)
	}

	// A device that connected before, to connect again while the disk
	// fails.
	probe := brokertest.Opts{V5: true, ClientID: "bob-probe", User: "bob", Password: "pw-bob", Keepalive: 30}
	if code := hdConnectErr(t, b, probe); code != 0 {
		t.Fatalf("probe CONNACK 0x%02x", code)
	}

	db := b.Store()
	// Counted once the failpoint is set: a commit (a cursor save) may end
	// between the two otherwise.
	db.FailCommits(syscall.ENOSPC)
	t.Cleanup(func() { db.FailCommits(nil) })
	commits := db.Commits()

	t.Run("mqtt5 refused with 0x80 and internal", func(t *testing.T) {
		o := a5.sendDM("bob", "m5")
		if o.accepted || o.code != "internal" || o.reason != 0x80 {
			t.Fatalf("got %+v, want refused with error internal and PUBACK 0x80", o)
		}
	})
	t.Run("mqtt311 not acknowledged and disconnected", func(t *testing.T) {
		r3.Send(hdPublish("bob", "m3", 7, false))
		for _, pk := range r3.Closed() {
			if pk.FixedHeader.Type == packets.Puback {
				t.Fatalf("PUBACK for packet %d: a message nothing stored was acknowledged", pk.PacketID)
			}
		}
	})
	t.Run("reads still served", func(t *testing.T) {
		h := a5.request("h-1", "history", map[string]any{"conv": "dm:alice:bob"})
		if code := hdErrCode(h); code != "" {
			t.Fatalf("history: %s", code)
		}
		data, _ := h["data"].(map[string]any)
		msgs, _ := data["messages"].([]any)
		var ids []string
		for _, m := range msgs {
			id, _ := m.(map[string]any)["id"].(string)
			ids = append(ids, id)
		}
		if !slices.Equal(ids, []string{"before"}) {
			t.Errorf("history holds %v, want only [before]: nothing refused is stored", ids)
		}
		f := a5.request("f-1", "friend.list", nil)
		data, _ = f["data"].(map[string]any)
		if friends, _ := data["friends"].([]any); hdErrCode(f) != "" || len(friends) != 1 || friends[0] != "bob" {
			t.Errorf("friend.list: %v", f)
		}
		// The broker serves connections as before: a known device
		// connects (taking its session over) and gets PINGRESP.
		r := b.Raw(t, true)
		if ack := r.Connect(probe); ack.ReasonCode != 0 {
			t.Fatalf("connect while the disk fails: CONNACK 0x%02x", ack.ReasonCode)
		}
		r.Ping()
		r.Close()
	})

	s := hdStats(t, b)
	if s.Messages != 1 {
		t.Errorf("/stats messages = %d while the disk failed, want 1", s.Messages)
	}
	if n := s.MessagesRefused["internal"]; n != 2 {
		t.Errorf("/stats messages_refused_by_code.internal = %d, want 2", n)
	}
	if n := db.Commits(); n != commits {
		t.Errorf("%d commits succeeded while every commit was failing", n-commits)
	}
	select {
	case <-a5.c.Gone():
		t.Fatal("the 5.0 sender lost its connection")
	default:
	}

	db.FailCommits(nil)
	t.Run("mqtt5 resend accepted", func(t *testing.T) {
		if o := a5.sendDM("bob", "m5"); !o.accepted || o.reason != 0 {
			t.Fatalf("after the disk recovered: %+v", o)
		}
	})
	t.Run("mqtt311 reconnects and resends", func(t *testing.T) {
		r := b.Raw(t, false)
		if ack := r.Connect(alice3); ack.ReasonCode != 0 {
			t.Fatalf("reconnect: CONNACK 0x%02x", ack.ReasonCode)
		}
		r.Send(hdPublish("bob", "m3", 7, true))
		if ack := r.Expect(packets.Puback); ack.PacketID != 7 {
			t.Fatalf("PUBACK for packet %d, want 7", ack.PacketID)
		}
	})

	// bob's device, connected throughout, gets the first message and then
	// the two resent ones with the next seqs: nothing came in between.
	for i, id := range []string{"before", "m5", "m3"} {
		m := bob.c.NextOn(t, "im/u/bob/dm/alice")
		var got struct {
			ID  string
			Seq float64
		}
		if err := json.Unmarshal(m.Payload, &got); err != nil {
			t.Fatalf("bob: %v: %s", err, m.Payload)
		}
		if want := before.seq + float64(i); got.ID != id || got.Seq != want {
			t.Errorf("bob's message %d: %s seq %v, want %s seq %v", i+1, got.ID, got.Seq, id, want)
		}
	}
	if s := hdStats(t, b); s.Messages != 3 {
		t.Errorf("/stats messages = %d, want 3", s.Messages)
	}
}
