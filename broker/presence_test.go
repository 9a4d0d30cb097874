package broker_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// imQuietFor is how long a test listens for a presence or typing event that
// must not come, where no later message can prove its absence (presence is
// sent apart from the connection that caused it).
const imQuietFor = 300 * time.Millisecond

// wantPresence waits for c's next presence event and checks it is about
// user going online or offline, at QoS 0.
func imWantPresence(t *testing.T, c *imClient, user string, online bool) {
	t.Helper()
	m := c.next(t, "presence event", c.isEvent("presence", nil))
	var ev struct {
		User   string `json:"user"`
		Online *bool  `json:"online"`
		TS     int64  `json:"ts"`
	}
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.User != user || ev.Online == nil || *ev.Online != online || ev.TS <= 0 {
		t.Fatalf("%s: presence %s, want user %s online %v", c.ID, m.Payload, user, online)
	}
	if m.QoS != 0 {
		t.Fatalf("%s: presence at QoS %d, want 0", c.ID, m.QoS)
	}
}

// noPresence checks that no presence event comes to c for a while.
func imNoPresence(t *testing.T, c *imClient) {
	t.Helper()
	c.absent(t, "presence event", imQuietFor, c.isEvent("presence", nil))
}

// wantOnline checks the presence op's answer for args.
func imWantOnline(t *testing.T, c *imClient, args imArgs, want ...string) {
	t.Helper()
	d := c.ok(t, "presence", args)
	got := imStrs(t, d["online"])
	slices.Sort(got)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: presence %v: online %v, want %v", c.user, args, got, want)
	}
}

// TestPresenceTwoDevices: online when the first device connects, offline
// only when the last goes.
func TestPresenceTwoDevices(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob")
	imFriends(t, b, "alice", "bob")
	a := imConnect(t, b, "alice", "", true)
	imWantOnline(t, a, nil)

	phone := imConnect(t, b, "bob", "bob-phone", false)
	imWantPresence(t, a, "bob", true)
	laptop := imConnect(t, b, "bob", "bob-laptop", true)
	imNoPresence(t, a)
	imWantOnline(t, a, nil, "bob")
	// Nothing is pushed to a connecting device about others.
	phone.kept(t, "presence event", phone.isEvent("presence", nil))
	laptop.kept(t, "presence event", laptop.isEvent("presence", nil))

	phone.Close()
	imNoPresence(t, a)
	imWantOnline(t, a, nil, "bob")
	laptop.Close()
	imWantPresence(t, a, "bob", false)
	imWantOnline(t, a, nil)

	// Back again, on the other protocol level.
	imConnect(t, b, "bob", "bob-laptop", false)
	imWantPresence(t, a, "bob", true)
	imNoPresence(t, a)
}

// TestPresenceTakeover: the same client id connecting again takes the
// session over; that is not the device going away.
func TestPresenceTakeover(t *testing.T) {
	t.Parallel()
	for _, v5 := range []bool{false, true} {
		t.Run(map[bool]string{false: "3.1.1", true: "5.0"}[v5], func(t *testing.T) {
			b := imStart(t, nil)
			b.Users("alice", "bob")
			imFriends(t, b, "alice", "bob")
			a := imConnect(t, b, "alice", "", !v5)
			old := imConnect(t, b, "bob", "bob-phone", v5)
			imWantPresence(t, a, "bob", true)

			cur := imConnect(t, b, "bob", "bob-phone", v5)
			select {
			case <-old.Gone():
			case <-time.After(brokertest.Timeout):
				t.Fatal("the taken-over connection is still open")
			}
			imNoPresence(t, a)
			imWantOnline(t, a, nil, "bob")

			// The new connection works, and its end is the real one.
			a.sendOK(t, "im/dm/bob", "m1", "still there?")
			if m := cur.msg(t, "dm/alice"); m["id"] != "m1" {
				t.Fatalf("after takeover: %v", m)
			}
			cur.Close()
			imWantPresence(t, a, "bob", false)
			imNoPresence(t, a)
		})
	}
}

// TestPresenceConnectionLost: a device that stops talking (keepalive
// timeout) or whose link drops is reported offline.
func TestPresenceConnectionLost(t *testing.T) {
	t.Parallel()
	b := imStart(t, func(c *broker.Config) { c.MaxKeepalive = 5 })
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	a := imConnect(t, b, "alice", "", false)

	t.Run("keepalive timeout", func(t *testing.T) {
		raw := b.Raw(t, false)
		// Keepalive 2 is under the cap, so it stands: mochi gives up on
		// a silent client after 1.5 times that.
		ack := raw.Connect(brokertest.Opts{User: "bob", Password: "pw-bob", ClientID: "bob-raw", Keepalive: 2})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
		}
		imWantPresence(t, a, "bob", true)
		imWantPresence(t, a, "bob", false)
		raw.Closed()
		imWantOnline(t, a, imArgs{"users": []string{"bob"}})
	})
	t.Run("link dropped", func(t *testing.T) {
		c := imConnect(t, b, "carol", "", true)
		imWantPresence(t, a, "carol", true)
		c.Drop()
		imWantPresence(t, a, "carol", false)
		imWantOnline(t, a, imArgs{"users": []string{"carol"}})
	})
}

// TestPresenceBlocked: a block either way hides presence both ways, in
// events and in the presence op.
func TestPresenceBlocked(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob")
	imFriends(t, b, "alice", "carol")
	// alice blocked carol; they stay friends.
	if err := b.Store().Update(func(tx storage.Tx) error { return tx.SetBlock("alice", "carol", time.Now().UnixMilli(), true) }); err != nil {
		t.Fatal(err)
	}
	bo := imConnect(t, b, "bob", "", false)
	ca := imConnect(t, b, "carol", "", true)
	a := imConnect(t, b, "alice", "", true)
	imWantPresence(t, bo, "alice", true)
	imNoPresence(t, ca)
	imWantOnline(t, ca, nil)
	imWantOnline(t, ca, imArgs{"users": []string{"alice"}})
	imWantOnline(t, a, imArgs{"users": []string{"bob", "carol"}}, "bob")

	ca.Close()
	bo.Close()
	// bob's going is told; carol's, which came first, is not.
	imWantPresence(t, a, "bob", false)
	imNoPresence(t, a)

	// The blocked one coming back is not told either.
	ca = imConnect(t, b, "carol", "", false)
	a.Close()
	imNoPresence(t, ca)
}

// TestPresenceOp: which of the given users, or of the caller's friends, are
// online, leaving out non-friends and blocks.
func TestPresenceOp(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave", "erin")
	imFriends(t, b, "alice", "bob")
	imFriends(t, b, "alice", "carol")
	imFriends(t, b, "alice", "dave")
	if err := b.Store().Update(func(tx storage.Tx) error { return tx.SetBlock("dave", "alice", time.Now().UnixMilli(), true) }); err != nil {
		t.Fatal(err)
	}
	a := imConnect(t, b, "alice", "", false)
	for _, u := range []string{"bob", "dave", "erin"} {
		imConnect(t, b, u, "", u == "dave")
	}
	for _, tc := range []struct {
		name string
		args imArgs
		want []string
	}{
		// carol is offline, dave blocked alice, erin is no friend.
		{"friends by default", nil, []string{"bob"}},
		{"given users", imArgs{"users": []string{"carol", "bob", "erin", "dave"}}, []string{"bob"}},
		{"a non-friend only", imArgs{"users": []string{"erin"}}, nil},
		{"an unknown user", imArgs{"users": []string{"zed"}}, nil},
		{"oneself", imArgs{"users": []string{"alice"}}, nil},
		{"twice", imArgs{"users": []string{"bob", "bob"}}, []string{"bob"}},
		{"none", imArgs{"users": []string{}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { imWantOnline(t, a, tc.args, tc.want...) })
	}
	for _, tc := range []struct {
		name string
		args imArgs
	}{
		{"invalid id", imArgs{"users": []string{"bob", "Bob!"}}},
		{"not an array", imArgs{"users": "bob"}},
		{"not strings", imArgs{"users": []int{1}}},
	} {
		t.Run(tc.name, func(t *testing.T) { a.fail(t, "presence", tc.args, imqtt.CodeBadRequest) })
	}
}

// TestTyping: typing reaches the other online members at QoS 0, not the
// typist's own devices, not those blocked either way, and is never stored.
func TestTyping(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob", "carol", "dave")
	// dave's tablet has connected before: it would get stored entries.
	tab := imConnect(t, b, "dave", "dave-tablet", true)
	tab.Close()
	a1 := imConnect(t, b, "alice", "alice-phone", false)
	a2 := imConnect(t, b, "alice", "alice-laptop", true)
	bo := imConnect(t, b, "bob", "", true)
	ca := imConnect(t, b, "carol", "", false)
	a1.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob", "carol", "dave"}})

	isTyping := func(c *imClient) func(brokertest.Msg) bool {
		return c.isEvent("typing", nil)
	}
	wantTyping := func(t *testing.T, c *imClient, conv, user string) {
		t.Helper()
		m := c.next(t, "typing event", isTyping(c))
		var ev map[string]any
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if ev["conv"] != conv || ev["user"] != user || m.QoS != 0 {
			t.Fatalf("%s: typing %s at QoS %d, want conv %s user %s at QoS 0", c.ID, m.Payload, m.QoS, conv, user)
		}
	}
	// Typing is written to the recipients before the typist's response;
	// a response to a request made after that comes after it on the same
	// connection, so once it is in, any typing event for c is in too.
	settled := func(c *imClient) {
		t.Helper()
		c.ok(t, "block.list", nil)
	}

	a1.ok(t, "typing", imArgs{"conv": "g:team"})
	wantTyping(t, bo, "g:team", "alice")
	wantTyping(t, ca, "g:team", "alice")
	for _, c := range []*imClient{a1, a2} {
		settled(c)
		c.kept(t, "typing event of one's own", isTyping(c))
	}
	a2.ok(t, "typing", imArgs{"conv": "dm:alice:bob"})
	wantTyping(t, bo, "dm:alice:bob", "alice")
	settled(ca)
	ca.kept(t, "typing event of a DM of others", isTyping(ca))

	// bob blocks alice: no typing either way, in the DM or the group.
	bo.ok(t, "block.add", imArgs{"user": "alice"})
	a1.ok(t, "typing", imArgs{"conv": "g:team"})
	a1.ok(t, "typing", imArgs{"conv": "dm:alice:bob"})
	bo.ok(t, "typing", imArgs{"conv": "g:team"})
	wantTyping(t, ca, "g:team", "alice")
	wantTyping(t, ca, "g:team", "bob")
	settled(bo)
	bo.kept(t, "typing event from a blocked user", isTyping(bo))
	for _, c := range []*imClient{a1, a2} {
		settled(c)
		c.kept(t, "typing event from a blocking user", isTyping(c))
	}

	a1.fail(t, "typing", imArgs{"conv": "dm:bob:carol"}, imqtt.CodeNotMember)
	a1.fail(t, "typing", imArgs{"conv": "g:nope"}, imqtt.CodeNoSuchGroup)
	a1.fail(t, "typing", imArgs{}, imqtt.CodeBadRequest)

	// The tablet was away through all of it: its backlog has the group
	// and the message after the typing, and no typing.
	a1.sendOK(t, "im/g/team", "m1", "done typing")
	tab = imConnect(t, b, "dave", "dave-tablet", true)
	tab.groupEvent(t, "group.joined", "team", "by", "alice")
	if m := tab.msg(t, "g/team"); m["id"] != "m1" {
		t.Fatalf("tablet: %v", m)
	}
	tab.kept(t, "stored typing event", isTyping(tab))
}

// TestPresenceFlapOrder: a device that comes and goes quickly must leave
// its friends with events in the order things happened, alternating, the
// last one offline.
func TestPresenceFlapOrder(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob")
	imFriends(t, b, "alice", "bob")
	a := imConnect(t, b, "alice", "", true)
	const flaps = 150
	for range flaps {
		raw := b.Raw(t, false)
		if ack := raw.Connect(brokertest.Opts{User: "bob", Password: "pw-bob", ClientID: "bob-raw"}); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
		}
		// A lost link, not a DISCONNECT: the broker may still be ending
		// one connection when the next comes, as on a flaky network.
		raw.Close()
	}
	brokertest.Eventually(t, "bob offline", func() bool {
		return len(imStrs(t, a.ok(t, "presence", nil)["online"])) == 0
	})
	// Stragglers of the last change, if any, come within this.
	a.absent(t, "nothing", imQuietFor, func(brokertest.Msg) bool { return false })
	var got []bool
	for _, m := range a.pending {
		var ev struct {
			Type   string `json:"type"`
			Online bool   `json:"online"`
		}
		if a.isEvent("presence", nil)(m) && json.Unmarshal(m.Payload, &ev) == nil {
			got = append(got, ev.Online)
		}
	}
	for i, on := range got {
		if on != (i%2 == 0) {
			t.Fatalf("presence event %d of %d: online %v, out of order", i+1, len(got), on)
		}
	}
	if len(got) == 0 || got[len(got)-1] {
		t.Fatalf("%d presence events, the last not offline", len(got))
	}
}
