package broker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// imArgs are the fields of a request besides rid and op.
type imArgs = map[string]any

// imClient is a connected device of a user, subscribed to im/u/{user}/#. It
// keeps what it read but did not want yet: a wait for one kind of message
// (a response, an event) must not throw away another that a later wait is
// about, whatever order the broker happened to send them in.
type imClient struct {
	*brokertest.Client
	user    string
	pending []brokertest.Msg
	rids    int
}

// imStart starts a broker whose rate limits stay out of the way of tests
// that send quickly.
func imStart(t *testing.T, mod func(*broker.Config)) *brokertest.B {
	t.Helper()
	return brokertest.Start(t, func(c *broker.Config) {
		c.Limits.MessagesPerSecond = 1e6
		c.Limits.RequestsPerSecond = 1e6
		if mod != nil {
			mod(c)
		}
	})
}

// imConnect connects user's device clientID ("" for user+"-dev") with
// password "pw-"+user and subscribes it to its inbox at QoS 1.
func imConnect(t *testing.T, b *brokertest.B, user, clientID string, v5 bool) *imClient {
	t.Helper()
	if clientID == "" {
		clientID = user + "-dev"
	}
	c, err := b.Dial(brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: clientID})
	if err != nil {
		t.Fatalf("connect %s as %s: %v", clientID, user, err)
	}
	t.Cleanup(c.Close)
	if code, err := c.Subscribe("im/u/"+user+"/#", 1); err != nil || code != 1 {
		t.Fatalf("%s: subscribe: code 0x%02x, %v", clientID, code, err)
	}
	return &imClient{Client: c, user: user}
}

// imFriends makes every pair of users friends in the store.
func imFriends(t *testing.T, b *brokertest.B, users ...string) {
	t.Helper()
	for i, a := range users {
		for _, c := range users[i+1:] {
			b.MakeFriends(t, a, c)
		}
	}
}

// next returns the first message, kept or arriving, that match accepts,
// keeping the others.
func (c *imClient) next(t *testing.T, what string, match func(brokertest.Msg) bool) brokertest.Msg {
	t.Helper()
	for i, m := range c.pending {
		if match(m) {
			c.pending = slices.Delete(c.pending, i, i+1)
			return m
		}
	}
	deadline := time.NewTimer(brokertest.Timeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-c.Msgs:
			if match(m) {
				return m
			}
			c.pending = append(c.pending, m)
		case <-deadline.C:
			t.Fatalf("%s: no %s within %s; got meanwhile: %s", c.ID, what, brokertest.Timeout, c.dump())
			return brokertest.Msg{}
		}
	}
}

// absent fails the test if a message that match accepts is kept or arrives
// within d. Tests use it only where no later message can prove an absence.
func (c *imClient) absent(t *testing.T, what string, d time.Duration, match func(brokertest.Msg) bool) {
	t.Helper()
	for _, m := range c.pending {
		if match(m) {
			t.Fatalf("%s: unexpected %s: %s %s", c.ID, what, m.Topic, m.Payload)
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m := <-c.Msgs:
			if match(m) {
				t.Fatalf("%s: unexpected %s: %s %s", c.ID, what, m.Topic, m.Payload)
			}
			c.pending = append(c.pending, m)
		case <-timer.C:
			return
		}
	}
}

// kept fails the test if a message that match accepts has been received.
// Called after a later message arrived, it proves that no such message came
// before it.
func (c *imClient) kept(t *testing.T, what string, match func(brokertest.Msg) bool) {
	t.Helper()
	for _, m := range c.pending {
		if match(m) {
			t.Fatalf("%s: unexpected %s: %s %s", c.ID, what, m.Topic, m.Payload)
		}
	}
}

func (c *imClient) dump() string {
	var b strings.Builder
	for _, m := range c.pending {
		fmt.Fprintf(&b, "\n\t%s %s", m.Topic, m.Payload)
	}
	return b.String()
}

// req sends a request and returns the whole response.
func (c *imClient) req(t *testing.T, op string, args imArgs) map[string]any {
	t.Helper()
	c.rids++
	rid := fmt.Sprintf("%s#%d", op, c.rids)
	r := imArgs{"rid": rid, "op": op}
	for k, v := range args {
		r[k] = v
	}
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return c.reqRaw(t, rid, body)
}

// reqRaw publishes a request payload as it is and returns the response
// echoing rid.
func (c *imClient) reqRaw(t *testing.T, rid string, payload []byte) map[string]any {
	t.Helper()
	if code, err := c.Publish("im/req", 1, payload); err != nil || code != 0 {
		t.Fatalf("%s: publish request: code 0x%02x, %v", c.ID, code, err)
	}
	res := "im/u/" + c.user + "/res"
	var out map[string]any
	c.next(t, "response "+rid, func(m brokertest.Msg) bool {
		if m.Topic != res {
			return false
		}
		var r map[string]any
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("%s: response %s: %v", c.ID, m.Payload, err)
		}
		if r["rid"] != rid {
			return false
		}
		out = r
		return true
	})
	return out
}

// ok sends a request that must succeed and returns its data (an empty map
// when there is none).
func (c *imClient) ok(t *testing.T, op string, args imArgs) map[string]any {
	t.Helper()
	r := c.req(t, op, args)
	if r["ok"] != true {
		t.Fatalf("%s: %s %v: want success, got %v", c.user, op, args, r)
	}
	d, _ := r["data"].(map[string]any)
	if d == nil {
		d = map[string]any{}
	}
	return d
}

// fail sends a request that must fail with code.
func (c *imClient) fail(t *testing.T, op string, args imArgs, code imqtt.Code) {
	t.Helper()
	r := c.req(t, op, args)
	if r["ok"] != false {
		t.Fatalf("%s: %s %v: want error %s, got %v", c.user, op, args, code, r)
	}
	e, _ := r["error"].(map[string]any)
	if e == nil || e["code"] != string(code) {
		t.Fatalf("%s: %s %v: want error %s, got %v", c.user, op, args, code, r)
	}
	if m, _ := e["message"].(string); m == "" {
		t.Errorf("%s: %s: error without a message: %v", c.user, op, r)
	}
}

// isEvent matches events of type typ (any type for "") for which match
// (if not nil) holds.
func (c *imClient) isEvent(typ string, match func(map[string]any) bool) func(brokertest.Msg) bool {
	topic := "im/u/" + c.user + "/ev"
	return func(m brokertest.Msg) bool {
		if m.Topic != topic {
			return false
		}
		var ev map[string]any
		if json.Unmarshal(m.Payload, &ev) != nil {
			return false
		}
		return (typ == "" || ev["type"] == typ) && (match == nil || match(ev))
	}
}

// event returns the next event of type typ for which match (if not nil)
// holds, and checks it carries a ts.
func (c *imClient) event(t *testing.T, typ string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	m := c.next(t, "event "+typ, c.isEvent(typ, match))
	var ev map[string]any
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ts, _ := ev["ts"].(float64); ts <= 0 {
		t.Errorf("%s: event without ts: %s", c.ID, m.Payload)
	}
	return ev
}

// groupEvent returns the next event of type typ about group g and checks
// its other field (by or user) is want.
func (c *imClient) groupEvent(t *testing.T, typ, g, field, want string) {
	t.Helper()
	ev := c.event(t, typ, func(ev map[string]any) bool { return ev["group"] == g })
	if ev[field] != want {
		t.Fatalf("%s: %s of %s: %s = %v, want %s (%v)", c.ID, typ, g, field, ev[field], want, ev)
	}
}

// msg returns the next message on the conversation topic of conv (dm peer
// or group, as in im/u/{me}/{conv}), decoded.
func (c *imClient) msg(t *testing.T, conv string) map[string]any {
	t.Helper()
	topic := "im/u/" + c.user + "/" + conv
	m := c.next(t, "message on "+topic, func(m brokertest.Msg) bool { return m.Topic == topic })
	if m.QoS != 1 {
		t.Errorf("%s: message on %s at QoS %d, want 1", c.ID, topic, m.QoS)
	}
	var out map[string]any
	if err := json.Unmarshal(m.Payload, &out); err != nil {
		t.Fatalf("%s: message %s: %v", c.ID, m.Payload, err)
	}
	return out
}

// send publishes a message at QoS 1 and returns the MQTT 5 PUBACK reason.
func (c *imClient) send(t *testing.T, topic, payload string) byte {
	t.Helper()
	code, err := c.Publish(topic, 1, []byte(payload))
	if err != nil {
		t.Fatalf("%s: publish to %s: %v", c.ID, topic, err)
	}
	return code
}

// sendOK publishes a message that must be accepted.
func (c *imClient) sendOK(t *testing.T, topic, id, body string) {
	t.Helper()
	p, _ := json.Marshal(map[string]string{"id": id, "body": body})
	if code := c.send(t, topic, string(p)); code != 0 {
		t.Fatalf("%s: message %s to %s refused: 0x%02x", c.ID, id, topic, code)
	}
}

// sendRefused publishes a message that must be refused with code: an error
// on res echoing the id, and for MQTT 5 the PUBACK reason of code.
func (c *imClient) sendRefused(t *testing.T, topic, id string, code imqtt.Code) {
	t.Helper()
	p, _ := json.Marshal(map[string]string{"id": id, "body": "x"})
	reason := c.send(t, topic, string(p))
	if c.V5 && reason != code.ReasonCode() {
		t.Errorf("%s: PUBACK for %s: 0x%02x, want 0x%02x", c.ID, topic, reason, code.ReasonCode())
	}
	res := "im/u/" + c.user + "/res"
	m := c.next(t, "error for message "+id, func(m brokertest.Msg) bool {
		return m.Topic == res && strings.Contains(string(m.Payload), `"id":"`+id+`"`)
	})
	var r struct {
		OK    bool `json:"ok"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Payload, &r); err != nil || r.OK || r.Error.Code != string(code) {
		t.Fatalf("%s: message to %s: got %s, want error %s", c.ID, topic, m.Payload, code)
	}
}

// num reads a JSON number.
func imNum(t *testing.T, v any) int {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("not a number: %v (%T)", v, v)
	}
	return int(f)
}

// strs reads a JSON array of strings.
func imStrs(t *testing.T, v any) []string {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("not an array: %v (%T)", v, v)
	}
	out := make([]string, len(a))
	for i, x := range a {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("not a string: %v in %v", x, v)
		}
		out[i] = s
	}
	return out
}

// wantInfo checks group.info as seen by c.
func imWantInfo(t *testing.T, c *imClient, g, name, owner string, members ...string) {
	t.Helper()
	d := c.ok(t, "group.info", imArgs{"group": g})
	if d["group"] != g || d["name"] != name || d["owner"] != owner || !slices.Equal(imStrs(t, d["members"]), members) {
		t.Fatalf("group.info %s: %v, want name %q owner %s members %v", g, d, name, owner, members)
	}
}

// fromGroup matches messages of group g in c's inbox.
func imFromGroup(c *imClient, g string) func(brokertest.Msg) bool {
	topic := "im/u/" + c.user + "/g/" + g
	return func(m brokertest.Msg) bool { return m.Topic == topic }
}

// TestGroupCreate covers group.create as PROTOCOL.md section 5 has it, with
// members on both protocol levels.
func TestGroupCreate(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob", "carol")
	a := imConnect(t, b, "alice", "", false)
	bo := imConnect(t, b, "bob", "", true)
	ca := imConnect(t, b, "carol", "", false)

	t.Run("with friends", func(t *testing.T) {
		d := a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"carol", "bob"}})
		if d["group"] != "team" {
			t.Fatalf("data: %v, want group team", d)
		}
		for _, c := range []*imClient{a, bo, ca} {
			c.groupEvent(t, "group.joined", "team", "by", "alice")
		}
		// Join order: the creator, then the members as given.
		imWantInfo(t, bo, "team", "team", "alice", "alice", "carol", "bob")
	})
	t.Run("generated id and given name", func(t *testing.T) {
		d := bo.ok(t, "group.create", imArgs{"name": "Bob's — 🎲 night", "members": []string{"alice"}})
		g, _ := d["group"].(string)
		if !imqtt.ValidID(g) || g == "team" {
			t.Fatalf("generated group id %q: not a fresh valid id", g)
		}
		a.groupEvent(t, "group.joined", g, "by", "bob")
		bo.groupEvent(t, "group.joined", g, "by", "bob")
		imWantInfo(t, a, g, "Bob's — 🎲 night", "bob", "bob", "alice")

		d2 := bo.ok(t, "group.create", imArgs{})
		g2, _ := d2["group"].(string)
		if !imqtt.ValidID(g2) || g2 == g {
			t.Fatalf("second generated id %q (first %q)", g2, g)
		}
		bo.groupEvent(t, "group.joined", g2, "by", "bob")
		// The name defaults to the id, also a generated one.
		imWantInfo(t, bo, g2, g2, "bob", "bob")
		// An empty name is an absent one.
		d3 := bo.ok(t, "group.create", imArgs{"name": ""})
		g3, _ := d3["group"].(string)
		if !imqtt.ValidID(g3) || g3 == g || g3 == g2 {
			t.Fatalf("third generated id %q (earlier %q, %q)", g3, g, g2)
		}
		bo.groupEvent(t, "group.joined", g3, "by", "bob")
		imWantInfo(t, bo, g3, g3, "bob", "bob")
	})
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args imArgs
			code imqtt.Code
		}{
			{"non-friend member", imArgs{"group": "g1", "members": []string{"bob", "dave"}}, imqtt.CodeNotFriends},
			{"unknown member", imArgs{"group": "g1", "members": []string{"bob", "zed"}}, imqtt.CodeNoSuchUser},
			{"id taken", imArgs{"group": "team", "members": []string{"bob"}}, imqtt.CodeBadRequest},
			{"invalid id", imArgs{"group": "Team!", "members": []string{"bob"}}, imqtt.CodeBadRequest},
			{"invalid member id", imArgs{"group": "g1", "members": []string{"Bob"}}, imqtt.CodeBadRequest},
			{"members not an array", imArgs{"group": "g1", "members": "bob"}, imqtt.CodeBadRequest},
			{"name too long", imArgs{"group": "g1", "name": strings.Repeat("é", 65)}, imqtt.CodeBadRequest},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a.fail(t, "group.create", tc.args, tc.code)
			})
		}
		// Nothing was created: not g1, not a bit of it.
		a.fail(t, "group.info", imArgs{"group": "g1"}, imqtt.CodeNoSuchGroup)
		bo.fail(t, "group.info", imArgs{"group": "g1"}, imqtt.CodeNoSuchGroup)
		imWantInfo(t, a, "team", "team", "alice", "alice", "carol", "bob")
		// Bob was named in refused creations: no group.joined for him. A
		// later event of his stream proves none came before.
		a.ok(t, "group.create", imArgs{"group": "marker", "members": []string{"bob"}})
		bo.groupEvent(t, "group.joined", "marker", "by", "alice")
		bo.kept(t, "group.joined of a refused creation", bo.isEvent("group.joined", func(ev map[string]any) bool { return ev["group"] == "g1" }))
		// A 64-character name is fine; an empty one is the group id.
		a.ok(t, "group.create", imArgs{"group": "g64", "name": strings.Repeat("é", 64)})
		a.ok(t, "group.create", imArgs{"group": "g0", "name": ""})
		imWantInfo(t, a, "g0", "g0", "alice", "alice")
	})
}

// TestGroupAdd covers group.add: owner only, friends only and all or
// nothing, members skipped, and who is told what.
func TestGroupAdd(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave", "erin")
	imFriends(t, b, "alice", "bob", "carol", "erin")
	a := imConnect(t, b, "alice", "", true)
	bo := imConnect(t, b, "bob", "", false)
	ca := imConnect(t, b, "carol", "", true)
	er := imConnect(t, b, "erin", "", false)
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob"}})
	a.groupEvent(t, "group.joined", "team", "by", "alice")
	bo.groupEvent(t, "group.joined", "team", "by", "alice")

	bo.fail(t, "group.add", imArgs{"group": "team", "users": []string{"carol"}}, imqtt.CodeNotOwner)
	// dave is no friend of alice: carol is not added either.
	a.fail(t, "group.add", imArgs{"group": "team", "users": []string{"carol", "dave"}}, imqtt.CodeNotFriends)
	a.fail(t, "group.add", imArgs{"group": "team", "users": []string{"carol", "zed"}}, imqtt.CodeNoSuchUser)
	a.fail(t, "group.add", imArgs{"group": "nope", "users": []string{"carol"}}, imqtt.CodeNoSuchGroup)
	a.fail(t, "group.add", imArgs{"group": "team", "users": []string{}}, imqtt.CodeBadRequest)
	a.fail(t, "group.add", imArgs{"group": "team"}, imqtt.CodeBadRequest)
	imWantInfo(t, a, "team", "team", "alice", "alice", "bob")
	ca.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNotMember)

	// bob is a member already: skipped, with no second group.joined.
	a.ok(t, "group.add", imArgs{"group": "team", "users": []string{"bob", "carol"}})
	ca.groupEvent(t, "group.joined", "team", "by", "alice")
	a.groupEvent(t, "group.member_added", "team", "user", "carol")
	bo.groupEvent(t, "group.member_added", "team", "user", "carol")
	imWantInfo(t, ca, "team", "team", "alice", "alice", "bob", "carol")

	// The next addition is the marker: nothing about the refused or
	// skipped additions came before it.
	a.ok(t, "group.add", imArgs{"group": "team", "users": []string{"erin"}})
	er.groupEvent(t, "group.joined", "team", "by", "alice")
	for _, c := range []*imClient{a, bo, ca} {
		c.groupEvent(t, "group.member_added", "team", "user", "erin")
		c.kept(t, "second group.joined", c.isEvent("group.joined", nil))
		c.kept(t, "stray group.member_added", c.isEvent("group.member_added", nil))
	}
	er.kept(t, "stray event", er.isEvent("", nil))
	imWantInfo(t, er, "team", "team", "alice", "alice", "bob", "carol", "erin")
}

// TestGroupFanOut: a group message reaches every device of every member,
// the sending device included, in order and the same everywhere.
func TestGroupFanOut(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	a1 := imConnect(t, b, "alice", "alice-phone", false)
	a2 := imConnect(t, b, "alice", "alice-laptop", true)
	bo := imConnect(t, b, "bob", "", true)
	ca := imConnect(t, b, "carol", "", false)
	a1.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob", "carol"}})
	all := []*imClient{a1, a2, bo, ca}
	for _, c := range all {
		c.groupEvent(t, "group.joined", "team", "by", "alice")
	}

	bo.sendOK(t, "im/g/team", "b1", "one")
	a2.sendOK(t, "im/g/team", "a1", `two`)
	ca.sendOK(t, "im/g/team", "c1", "three")
	// An idempotent retry: acknowledged, nobody gets a second copy.
	bo.sendOK(t, "im/g/team", "b1", "one")
	bo.sendOK(t, "im/g/team", "b2", "four")
	want := []struct{ from, id, body string }{{"bob", "b1", "one"}, {"alice", "a1", "two"}, {"carol", "c1", "three"}, {"bob", "b2", "four"}}
	var first [][]byte
	for _, c := range all {
		for i, w := range want {
			m := c.msg(t, "g/team")
			if m["conv"] != "g:team" || imNum(t, m["seq"]) != i+1 || m["from"] != w.from || m["id"] != w.id || m["body"] != w.body || m["type"] != "text" {
				t.Fatalf("%s: message %d: %v, want %+v", c.ID, i+1, m, w)
			}
			p, _ := json.Marshal(m)
			if c == a1 {
				first = append(first, p)
			} else if string(p) != string(first[i]) {
				t.Fatalf("%s: message %d differs between devices: %s vs %s", c.ID, i+1, p, first[i])
			}
		}
	}
}

// TestGroupNonMember: a non-member can neither send nor read, on either
// protocol level.
func TestGroupNonMember(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "dave")
	imFriends(t, b, "alice", "bob", "dave")
	a := imConnect(t, b, "alice", "", false)
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob"}})
	a.sendOK(t, "im/g/team", "m1", "members only")
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			d := imConnect(t, b, "dave", fmt.Sprintf("dave-%v", v5), v5)
			d.sendRefused(t, "im/g/team", "x1", imqtt.CodeNotMember)
			d.sendRefused(t, "im/g/nope", "x2", imqtt.CodeNoSuchGroup)
			d.fail(t, "history", imArgs{"conv": "g:team"}, imqtt.CodeNotMember)
			d.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNotMember)
			d.fail(t, "read", imArgs{"conv": "g:team", "seq": 1}, imqtt.CodeNotMember)
			d.fail(t, "typing", imArgs{"conv": "g:team"}, imqtt.CodeNotMember)
			d.fail(t, "group.leave", imArgs{"group": "team"}, imqtt.CodeNotMember)
			d.kept(t, "group message", imFromGroup(d, "team"))
		})
	}
	// Nothing dave sent was stored.
	h := a.ok(t, "history", imArgs{"conv": "g:team"})
	if msgs := h["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("history: %v, want only m1", h)
	}
}

// TestGroupKick: a kicked member gets nothing sent after the kick, on a
// device online at the time or one that returns later, but gets group.left.
func TestGroupKick(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	// carol's tablet has connected before, so it gets a backlog when it
	// returns.
	tab := imConnect(t, b, "carol", "carol-tablet", true)
	tab.Close()
	a := imConnect(t, b, "alice", "", false)
	bo := imConnect(t, b, "bob", "", true)
	ca := imConnect(t, b, "carol", "carol-phone", false)

	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob", "carol"}})
	a.sendOK(t, "im/g/team", "before", "before the kick")
	if m := ca.msg(t, "g/team"); m["id"] != "before" {
		t.Fatalf("carol: %v", m)
	}

	bo.fail(t, "group.kick", imArgs{"group": "team", "user": "carol"}, imqtt.CodeNotOwner)
	a.fail(t, "group.kick", imArgs{"group": "team", "user": "alice"}, imqtt.CodeBadRequest)
	a.fail(t, "group.kick", imArgs{"group": "team", "user": "zed"}, imqtt.CodeNotMember)
	a.fail(t, "group.kick", imArgs{"group": "team", "user": "Bad!"}, imqtt.CodeBadRequest)
	a.fail(t, "group.kick", imArgs{"group": "team"}, imqtt.CodeBadRequest)
	a.ok(t, "group.kick", imArgs{"group": "team", "user": "carol"})
	ca.groupEvent(t, "group.left", "team", "by", "alice")
	a.groupEvent(t, "group.member_removed", "team", "user", "carol")
	bo.groupEvent(t, "group.member_removed", "team", "user", "carol")
	a.fail(t, "group.kick", imArgs{"group": "team", "user": "carol"}, imqtt.CodeNotMember)

	a.sendOK(t, "im/g/team", "after", "after the kick")
	bo.sendOK(t, "im/g/team", "after2", "also after")
	ca.sendRefused(t, "im/g/team", "c1", imqtt.CodeNotMember)
	ca.fail(t, "history", imArgs{"conv": "g:team"}, imqtt.CodeNotMember)
	ca.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNotMember)
	for _, c := range []*imClient{a, bo} {
		for _, id := range []string{"before", "after", "after2"} {
			if m := c.msg(t, "g/team"); m["id"] != id {
				t.Fatalf("%s: got %v, want %s", c.ID, m, id)
			}
		}
	}
	// A DM to carol comes after the group messages in her stream, had they
	// been added to it: once it is in, nothing of the group came.
	a.sendOK(t, "im/dm/carol", "dm1", "still friends")
	if m := ca.msg(t, "dm/alice"); m["id"] != "dm1" {
		t.Fatalf("carol: %v", m)
	}
	ca.kept(t, "group message after the kick", imFromGroup(ca, "team"))
	for _, cv := range imConvList(t, ca) {
		if cv["conv"] == "g:team" {
			t.Fatalf("carol's conv.list still has the group: %v", cv)
		}
	}

	// The tablet returns: the backlog up to the kick, group.left, the DM,
	// and nothing of the group after the kick.
	tab = imConnect(t, b, "carol", "carol-tablet", true)
	tab.groupEvent(t, "group.joined", "team", "by", "alice")
	if m := tab.msg(t, "g/team"); m["id"] != "before" {
		t.Fatalf("tablet: %v", m)
	}
	tab.groupEvent(t, "group.left", "team", "by", "alice")
	if m := tab.msg(t, "dm/alice"); m["id"] != "dm1" {
		t.Fatalf("tablet: %v", m)
	}
	tab.kept(t, "group message after the kick", imFromGroup(tab, "team"))
}

// TestGroupLeaveHandoverDelete: leaving, the owner's role passing to the
// member who joined earliest, and the last one out deleting the group.
func TestGroupLeaveHandoverDelete(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob", "carol", "dave")
	a := imConnect(t, b, "alice", "", true)
	bo := imConnect(t, b, "bob", "", false)
	ca := imConnect(t, b, "carol", "", true)
	da := imConnect(t, b, "dave", "", false)
	// carol is given before bob, so she joined earlier though her id sorts
	// later; dave joins last.
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"carol", "bob"}})
	a.ok(t, "group.add", imArgs{"group": "team", "users": []string{"dave"}})
	a.sendOK(t, "im/g/team", "m1", "hi")
	for _, c := range []*imClient{a, bo, ca, da} {
		c.groupEvent(t, "group.joined", "team", "by", "alice")
		c.msg(t, "g/team")
	}

	a.ok(t, "group.leave", imArgs{"group": "team"})
	a.groupEvent(t, "group.left", "team", "by", "alice")
	for _, c := range []*imClient{bo, ca, da} {
		c.groupEvent(t, "group.member_removed", "team", "user", "alice")
	}
	imWantInfo(t, bo, "team", "team", "carol", "carol", "bob", "dave")
	a.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNotMember)
	a.fail(t, "group.leave", imArgs{"group": "team"}, imqtt.CodeNotMember)
	bo.fail(t, "group.kick", imArgs{"group": "team", "user": "dave"}, imqtt.CodeNotOwner)

	// The new owner may do what owners do.
	ca.ok(t, "group.kick", imArgs{"group": "team", "user": "dave"})
	da.groupEvent(t, "group.left", "team", "by", "carol")
	ca.ok(t, "group.leave", imArgs{"group": "team"})
	ca.groupEvent(t, "group.left", "team", "by", "carol")
	bo.groupEvent(t, "group.member_removed", "team", "user", "dave")
	bo.groupEvent(t, "group.member_removed", "team", "user", "carol")
	imWantInfo(t, bo, "team", "team", "bob", "bob")

	// The last one out: the group is gone, history with it.
	bo.sendOK(t, "im/g/team", "m2", "alone")
	bo.msg(t, "g/team")
	bo.ok(t, "group.leave", imArgs{"group": "team"})
	bo.groupEvent(t, "group.left", "team", "by", "bob")
	for _, c := range []*imClient{a, bo, ca, da} {
		c.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNoSuchGroup)
	}
	bo.fail(t, "history", imArgs{"conv": "g:team"}, imqtt.CodeNoSuchGroup)
	bo.sendRefused(t, "im/g/team", "m3", imqtt.CodeNoSuchGroup)
	for _, cv := range imConvList(t, bo) {
		if cv["conv"] == "g:team" {
			t.Fatalf("conv.list still has the deleted group: %v", cv)
		}
	}

	// The id is free again, and the new group starts afresh.
	da.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob"}})
	bo.groupEvent(t, "group.joined", "team", "by", "dave")
	h := bo.ok(t, "history", imArgs{"conv": "g:team"})
	if msgs := h["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("history of the new group: %v", h)
	}
	da.sendOK(t, "im/g/team", "n1", "new")
	if m := bo.msg(t, "g/team"); imNum(t, m["seq"]) != 1 || m["id"] != "n1" {
		t.Fatalf("first message of the new group: %v", m)
	}
}

// TestGroupIDReuseKeepsOldBacklogApart: a device that was away while a
// group was deleted and its id taken by a new group must not be handed the
// new group's messages in place of the old ones it missed.
func TestGroupIDReuseKeepsOldBacklogApart(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob")
	imFriends(t, b, "carol", "dave")
	tab := imConnect(t, b, "bob", "bob-tablet", false)
	tab.Close()
	a := imConnect(t, b, "alice", "", false)
	bo := imConnect(t, b, "bob", "", true)
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob"}})
	a.sendOK(t, "im/g/team", "old1", "old one")
	bo.msg(t, "g/team")
	bo.ok(t, "group.leave", imArgs{"group": "team"})
	a.ok(t, "group.leave", imArgs{"group": "team"})
	a.fail(t, "group.info", imArgs{"group": "team"}, imqtt.CodeNoSuchGroup)

	// Strangers to bob take the id and talk.
	ca := imConnect(t, b, "carol", "", true)
	ca.ok(t, "group.create", imArgs{"group": "team", "members": []string{"dave"}})
	ca.sendOK(t, "im/g/team", "secret", "not for bob")
	ca.msg(t, "g/team")

	// bob's tablet returns; a DM after everything marks the end of its
	// backlog.
	a.sendOK(t, "im/dm/bob", "marker", "end")
	tab = imConnect(t, b, "bob", "bob-tablet", false)
	tab.msg(t, "dm/alice")
	for _, m := range tab.pending {
		if strings.Contains(string(m.Payload), "not for bob") {
			t.Fatalf("a message of a new group reusing a deleted group's id reached a device of a member of the old group: %s %s", m.Topic, m.Payload)
		}
	}
}

// TestGroupMemberCap: max_group_members counts the owner; over it is
// bad_request on create and on add, and nothing changes.
func TestGroupMemberCap(t *testing.T) {
	t.Parallel()
	b := imStart(t, func(c *broker.Config) { c.MaxGroupMembers = 3 })
	b.Users("alice", "bob", "carol", "dave")
	imFriends(t, b, "alice", "bob", "carol", "dave")
	a := imConnect(t, b, "alice", "", true)
	a.fail(t, "group.create", imArgs{"group": "big", "members": []string{"bob", "carol", "dave"}}, imqtt.CodeBadRequest)
	a.fail(t, "group.info", imArgs{"group": "big"}, imqtt.CodeNoSuchGroup)
	a.ok(t, "group.create", imArgs{"group": "small", "members": []string{"bob", "carol"}})
	a.fail(t, "group.add", imArgs{"group": "small", "users": []string{"dave"}}, imqtt.CodeBadRequest)
	// Already a member: nothing to add, so not over the cap.
	a.ok(t, "group.add", imArgs{"group": "small", "users": []string{"carol"}})
	imWantInfo(t, a, "small", "small", "alice", "alice", "bob", "carol")
	a.ok(t, "group.kick", imArgs{"group": "small", "user": "carol"})
	a.ok(t, "group.add", imArgs{"group": "small", "users": []string{"dave"}})
	imWantInfo(t, a, "small", "small", "alice", "alice", "bob", "dave")
}

// TestGroupBlocksDoNotApply: blocks are about DMs, requests, presence and
// typing; inside a group both still get each other's messages.
func TestGroupBlocksDoNotApply(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	a := imConnect(t, b, "alice", "", false)
	bo := imConnect(t, b, "bob", "", true)
	ca := imConnect(t, b, "carol", "", false)
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob", "carol"}})
	bo.ok(t, "block.add", imArgs{"user": "carol"})
	bo.sendRefused(t, "im/dm/carol", "d1", imqtt.CodeNotAllowed)
	ca.sendRefused(t, "im/dm/bob", "d2", imqtt.CodeNotAllowed)

	ca.sendOK(t, "im/g/team", "c1", "from carol")
	bo.sendOK(t, "im/g/team", "b1", "from bob")
	for _, c := range []*imClient{a, bo, ca} {
		for _, id := range []string{"c1", "b1"} {
			if m := c.msg(t, "g/team"); m["id"] != id {
				t.Fatalf("%s: %v, want %s", c.ID, m, id)
			}
		}
	}
}

// TestGroupOfflineMemberBacklog: a member of a 50-member group who was away
// gets the group's messages of that time, in order, when it returns.
func TestGroupOfflineMemberBacklog(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	users := make([]string, 50)
	for i := range users {
		users[i] = fmt.Sprintf("u%02d", i)
	}
	b.Users(users...)
	err := b.Store().Update(func(tx storage.Tx) error {
		for _, u := range users[1:] {
			if err := tx.SetFriends(users[0], u, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	away := users[37]
	dev := imConnect(t, b, away, "", true)
	dev.Close()

	owner := imConnect(t, b, users[0], "", false)
	owner.ok(t, "group.create", imArgs{"group": "fifty", "members": users[1:]})
	imWantInfo(t, owner, "fifty", "fifty", users[0], users...)
	const n = 30
	for i := 1; i <= n; i++ {
		owner.sendOK(t, "im/g/fifty", fmt.Sprintf("m%d", i), fmt.Sprintf("message %d", i))
	}

	dev = imConnect(t, b, away, "", true)
	dev.groupEvent(t, "group.joined", "fifty", "by", users[0])
	for i := 1; i <= n; i++ {
		m := dev.msg(t, "g/fifty")
		if imNum(t, m["seq"]) != i || m["id"] != fmt.Sprintf("m%d", i) || m["from"] != users[0] {
			t.Fatalf("backlog entry %d: %v", i, m)
		}
	}
	// The backlog came in order: nothing was left over for later.
	dev.kept(t, "duplicate", imFromGroup(dev, "fifty"))
}
