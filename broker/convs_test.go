package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
)

// convList returns the caller's conv.list entries.
func imConvList(t *testing.T, c *imClient) []map[string]any {
	t.Helper()
	d := c.ok(t, "conv.list", nil)
	raw, ok := d["convs"].([]any)
	if !ok {
		t.Fatalf("%s: conv.list: %v", c.user, d)
	}
	out := make([]map[string]any, len(raw))
	for i, x := range raw {
		out[i] = x.(map[string]any)
	}
	return out
}

// convEntry returns the conv.list entry of conv, failing if there is none.
func imConvEntry(t *testing.T, c *imClient, conv string) map[string]any {
	t.Helper()
	for _, cv := range imConvList(t, c) {
		if cv["conv"] == conv {
			return cv
		}
	}
	t.Fatalf("%s: %s not in conv.list", c.user, conv)
	return nil
}

// wantCounts checks last_seq, read_seq and unread of conv for c.
func imWantCounts(t *testing.T, c *imClient, conv string, last, read int) {
	t.Helper()
	cv := imConvEntry(t, c, conv)
	if imNum(t, cv["last_seq"]) != last || imNum(t, cv["read_seq"]) != read || imNum(t, cv["unread"]) != last-read {
		t.Fatalf("%s: %s: %v, want last_seq %d read_seq %d unread %d", c.user, conv, cv, last, read, last-read)
	}
	if last == 0 || read == last && cv["last"] == nil {
		return
	}
	if l, _ := cv["last"].(map[string]any); l == nil || imNum(t, l["seq"]) != last || l["conv"] != conv {
		t.Fatalf("%s: %s: last is %v, want the message of seq %d", c.user, conv, cv["last"], last)
	}
}

// wantRead waits for the read event of user up to seq in conv.
func imWantRead(t *testing.T, c *imClient, conv, user string, seq int) {
	t.Helper()
	ev := c.event(t, "read", func(ev map[string]any) bool { return ev["conv"] == conv })
	if ev["user"] != user || imNum(t, ev["seq"]) != seq {
		t.Fatalf("%s: read event %v, want user %s seq %d", c.ID, ev, user, seq)
	}
}

// TestReadMarks: marks move only forward, unread counts follow sends and
// reads, and a mark that moves is told to every member's devices.
func TestReadMarks(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob", "carol", "dave")
	a1 := imConnect(t, b, "alice", "alice-phone", false)
	a2 := imConnect(t, b, "alice", "alice-laptop", true)
	bo := imConnect(t, b, "bob", "", true)
	const dm = "dm:alice:bob"

	for i := 1; i <= 3; i++ {
		a1.sendOK(t, "im/dm/bob", fmt.Sprintf("m%d", i), "hi")
	}
	for i := 1; i <= 3; i++ {
		bo.msg(t, "dm/alice")
	}
	// One's own messages are never unread.
	imWantCounts(t, a1, dm, 3, 3)
	imWantCounts(t, bo, dm, 3, 0)

	if d := bo.ok(t, "read", imArgs{"conv": dm, "seq": 2}); imNum(t, d["read_seq"]) != 2 {
		t.Fatalf("read: %v", d)
	}
	for _, c := range []*imClient{bo, a1, a2} {
		imWantRead(t, c, dm, "bob", 2)
	}
	imWantCounts(t, bo, dm, 3, 2)

	// Backwards or in place: success, the mark stays, nobody is told.
	for _, seq := range []int{1, 2, 0} {
		if d := bo.ok(t, "read", imArgs{"conv": dm, "seq": seq}); imNum(t, d["read_seq"]) != 2 {
			t.Fatalf("read %d: %v, want read_seq 2", seq, d)
		}
	}
	for _, tc := range []struct {
		name string
		args imArgs
		code imqtt.Code
	}{
		{"past last_seq", imArgs{"conv": dm, "seq": 4}, imqtt.CodeBadRequest},
		{"negative", imArgs{"conv": dm, "seq": -1}, imqtt.CodeBadRequest},
		{"no seq", imArgs{"conv": dm}, imqtt.CodeBadRequest},
		{"seq not a number", imArgs{"conv": dm, "seq": "3"}, imqtt.CodeBadRequest},
		{"no conv", imArgs{"seq": 1}, imqtt.CodeBadRequest},
		{"invalid conv", imArgs{"conv": "dm:bob:alice", "seq": 1}, imqtt.CodeBadRequest},
		{"DM of others", imArgs{"conv": "dm:carol:dave", "seq": 0}, imqtt.CodeNotMember},
		{"unknown group", imArgs{"conv": "g:nope", "seq": 0}, imqtt.CodeNoSuchGroup},
	} {
		t.Run(tc.name, func(t *testing.T) { bo.fail(t, "read", tc.args, tc.code) })
	}
	imWantCounts(t, bo, dm, 3, 2)

	bo.ok(t, "read", imArgs{"conv": dm, "seq": 3})
	// The next read events are those of seq 3: the refused and backward
	// reads above told nobody anything.
	for _, c := range []*imClient{bo, a1, a2} {
		imWantRead(t, c, dm, "bob", 3)
		c.kept(t, "read event of a mark that did not move", c.isEvent("read", nil))
	}
	imWantCounts(t, bo, dm, 3, 3)

	// Replies count for the peer, not for the sender; the sender's mark
	// moves without a read event.
	bo.sendOK(t, "im/dm/alice", "r1", "reply")
	bo.sendOK(t, "im/dm/alice", "r2", "reply")
	imWantCounts(t, bo, dm, 5, 5)
	imWantCounts(t, a2, dm, 5, 3)
	a2.ok(t, "read", imArgs{"conv": dm, "seq": 5})
	imWantRead(t, a1, dm, "alice", 5)
	imWantRead(t, bo, dm, "alice", 5)
	imWantCounts(t, a1, dm, 5, 5)

	t.Run("group member added later", func(t *testing.T) {
		ca := imConnect(t, b, "carol", "", false)
		da := imConnect(t, b, "dave", "", true)
		a1.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob", "carol"}})
		imWantCounts(t, ca, "g:team", 0, 0)
		for i := 1; i <= 4; i++ {
			ca.sendOK(t, "im/g/team", fmt.Sprintf("g%d", i), "hi")
		}
		imWantCounts(t, bo, "g:team", 4, 0)
		imWantCounts(t, ca, "g:team", 4, 4)
		a1.ok(t, "group.add", imArgs{"group": "team", "users": []string{"dave"}})
		da.groupEvent(t, "group.joined", "team", "by", "alice")
		// dave starts with everything before him read, and no last message
		// he could not read.
		imWantCounts(t, da, "g:team", 4, 4)
		if cv := imConvEntry(t, da, "g:team"); cv["last"] != nil {
			t.Fatalf("dave sees a message from before he joined: %v", cv)
		}
		if d := da.ok(t, "read", imArgs{"conv": "g:team", "seq": 2}); imNum(t, d["read_seq"]) != 4 {
			t.Fatalf("dave read 2: %v", d)
		}
		ca.sendOK(t, "im/g/team", "g5", "hi dave")
		imWantCounts(t, da, "g:team", 5, 4)
		da.ok(t, "read", imArgs{"conv": "g:team", "seq": 5})
		// Every member's devices hear of it, dave's own included.
		for _, c := range []*imClient{da, a1, a2, bo, ca} {
			imWantRead(t, c, "g:team", "dave", 5)
		}
		imWantCounts(t, da, "g:team", 5, 5)
		imWantCounts(t, bo, "g:team", 5, 0)
	})
}

// tick waits until the clock has moved past the current millisecond, so
// that what happens next has a later timestamp than what happened before.
func imTick() {
	now := time.Now().UnixMilli()
	for time.Now().UnixMilli() <= now {
		time.Sleep(100 * time.Microsecond)
	}
}

// TestConvList: every group of the caller, also without messages, and every
// DM with a message, newest activity first.
func TestConvList(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave", "erin")
	imFriends(t, b, "alice", "bob", "carol", "dave", "erin")
	a := imConnect(t, b, "alice", "", true)
	bo := imConnect(t, b, "bob", "", false)
	ca := imConnect(t, b, "carol", "", true)

	if cs := imConvList(t, a); len(cs) != 0 {
		t.Fatalf("conv.list of a new user: %v", cs)
	}
	step := func(f func()) { imTick(); f(); imTick() }
	step(func() { a.ok(t, "group.create", imArgs{"group": "busy", "members": []string{"bob"}}) })
	step(func() { bo.ok(t, "group.create", imArgs{"group": "quiet", "members": []string{"alice"}}) })
	step(func() { a.ok(t, "group.create", imArgs{"group": "gone", "members": []string{"carol"}}) })
	step(func() { bo.sendOK(t, "im/dm/alice", "d1", "from bob") })
	step(func() { a.sendOK(t, "im/dm/carol", "d2", "to carol") })
	step(func() { ca.sendOK(t, "im/dm/alice", "d3", "from carol") })
	step(func() { bo.sendOK(t, "im/g/busy", "g1", "busy one") })
	step(func() { a.ok(t, "group.leave", imArgs{"group": "gone"}) })
	// dave is a friend with no messages: no DM entry for him.

	type want struct {
		conv       string
		last, read int
		lastID     string
	}
	check := func(wants ...want) {
		t.Helper()
		cs := imConvList(t, a)
		var got []string
		for _, cv := range cs {
			got = append(got, cv["conv"].(string))
		}
		var order []string
		for _, w := range wants {
			order = append(order, w.conv)
		}
		if !slices.Equal(got, order) {
			t.Fatalf("conv.list order %v, want %v", got, order)
		}
		for i, w := range wants {
			cv := cs[i]
			if imNum(t, cv["last_seq"]) != w.last || imNum(t, cv["read_seq"]) != w.read || imNum(t, cv["unread"]) != w.last-w.read {
				t.Errorf("%s: %v, want last_seq %d read_seq %d", w.conv, cv, w.last, w.read)
			}
			l, has := cv["last"]
			if w.lastID == "" {
				if has {
					t.Errorf("%s: has last %v, want none", w.conv, l)
				}
				continue
			}
			if m, _ := l.(map[string]any); m == nil || m["id"] != w.lastID || m["conv"] != w.conv || imNum(t, m["seq"]) != w.last || m["from"] == nil || m["body"] == nil {
				t.Errorf("%s: last %v, want message %s", w.conv, l, w.lastID)
			}
		}
	}
	check(
		want{"g:busy", 1, 0, "g1"},
		want{"dm:alice:carol", 2, 1, "d3"},
		want{"dm:alice:bob", 1, 0, "d1"},
		want{"g:quiet", 0, 0, ""},
	)

	step(func() { bo.sendOK(t, "im/g/quiet", "q1", "now quiet speaks") })
	step(func() { a.sendOK(t, "im/dm/bob", "d4", "to bob") })
	step(func() { a.ok(t, "read", imArgs{"conv": "dm:alice:carol", "seq": 2}) })
	check(
		want{"dm:alice:bob", 2, 2, "d4"},
		want{"g:quiet", 1, 0, "q1"},
		want{"g:busy", 1, 0, "g1"},
		want{"dm:alice:carol", 2, 2, "d3"},
	)
	// A DM appears with its first message.
	ab := imConnect(t, b, "dave", "", false)
	ab.sendOK(t, "im/dm/alice", "d5", "hello at last")
	check(
		want{"dm:alice:dave", 1, 0, "d5"},
		want{"dm:alice:bob", 2, 2, "d4"},
		want{"g:quiet", 1, 0, "q1"},
		want{"g:busy", 1, 0, "g1"},
		want{"dm:alice:carol", 2, 2, "d3"},
	)
}
