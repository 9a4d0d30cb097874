package broker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// The tests of the relationship chain (PROTOCOL.md sections 2, 5 and 6) share
// the helpers of this file; their names start with "chain" because other
// test files of this package have helpers of their own.

// chainQuietFor is how long a test listens to be sure that something does
// not arrive. It proves nothing alone; where it matters a fence follows: a
// later event whose arrival shows that nothing came before it.
const chainQuietFor = 300 * time.Millisecond

// chainStart starts a broker with rate limits out of the way and users with
// password "pw-"+id.
func chainStart(t *testing.T, mod func(*broker.Config), users ...string) *brokertest.B {
	t.Helper()
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Limits.MessagesPerSecond = 1e6
		c.Limits.RequestsPerSecond = 1e6
		if mod != nil {
			mod(c)
		}
	})
	b.Users(users...)
	return b
}

func protoName(v5 bool) string {
	if v5 {
		return "mqtt5"
	}
	return "mqtt311"
}

// chainDev is one connected device of a user. What it receives is kept by
// topic, so that waiting for a response never throws away an event that
// arrived first, and the other way round.
type chainDev struct {
	t    *testing.T
	user string
	c    *brokertest.Client
	got  []brokertest.Msg // received and not taken yet
	seen []brokertest.Msg // everything received, taken or not
	n    int              // requests made, for rids
}

// chainConnect connects user's device "{user}-dev" and subscribes it to
// im/u/{user}/#.
func chainConnect(t *testing.T, b *brokertest.B, user string, v5 bool) *chainDev {
	t.Helper()
	return chainConnectAs(t, b, user, user+"-dev", v5)
}

// chainConnectAs connects a device of user with a given client id and
// subscribes it to im/u/{user}/#.
func chainConnectAs(t *testing.T, b *brokertest.B, user, clientID string, v5 bool) *chainDev {
	t.Helper()
	c, err := b.Dial(brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: clientID})
	if err != nil {
		t.Fatalf("connect %s as %s: %v", user, clientID, err)
	}
	t.Cleanup(c.Close)
	d := &chainDev{t: t, user: user, c: c}
	d.subscribe("im/u/"+user+"/#", 1, 1)
	return d
}

// subscribe subscribes and fails unless the SUBACK carries want.
func (d *chainDev) subscribe(filter string, qos, want byte) {
	d.t.Helper()
	code, err := d.c.Subscribe(filter, qos)
	if err != nil {
		d.t.Fatalf("%s: subscribe %s: %v", d.user, filter, err)
	}
	if code != want {
		d.t.Fatalf("%s: subscribe %s: SUBACK 0x%02x; want 0x%02x", d.user, filter, code, want)
	}
}

func (d *chainDev) resTopic() string { return "im/u/" + d.user + "/res" }
func (d *chainDev) evTopic() string  { return "im/u/" + d.user + "/ev" }
func (d *chainDev) dmTopic(peer string) string {
	return "im/u/" + d.user + "/dm/" + peer
}

// take returns the oldest message on topic, waiting for one if need be.
func (d *chainDev) take(topic string) brokertest.Msg {
	d.t.Helper()
	for i, m := range d.got {
		if m.Topic == topic {
			d.got = slices.Delete(d.got, i, i+1)
			return m
		}
	}
	deadline := time.After(brokertest.Timeout)
	for {
		select {
		case m := <-d.c.Msgs:
			d.seen = append(d.seen, m)
			if m.Topic == topic {
				return m
			}
			d.got = append(d.got, m)
		case <-deadline:
			d.t.Fatalf("%s (%s): nothing on %s within %s; holding %d messages on other topics", d.user, d.c.ID, topic, brokertest.Timeout, len(d.got))
			return brokertest.Msg{}
		}
	}
}

// collect moves whatever has arrived into d.got without waiting.
func (d *chainDev) collect() {
	for {
		select {
		case m := <-d.c.Msgs:
			d.seen = append(d.seen, m)
			d.got = append(d.got, m)
		default:
			return
		}
	}
}

// quiet fails if anything arrives on one of topics (all topics if none are
// given) within chainQuietFor.
func (d *chainDev) quiet(topics ...string) {
	d.t.Helper()
	chainQuiet(d.t, map[*chainDev][]string{d: topics})
}

// chainQuiet listens once for chainQuietFor and then checks several devices:
// nothing may have arrived on the topics given for each (any topic for an
// empty list).
func chainQuiet(t *testing.T, devs map[*chainDev][]string) {
	t.Helper()
	time.Sleep(chainQuietFor) // an absence window, not synchronisation
	for d, topics := range devs {
		d.collect()
		for _, m := range d.got {
			if len(topics) == 0 || slices.Contains(topics, m.Topic) {
				t.Fatalf("%s (%s): unexpected message on %s: %s", d.user, d.c.ID, m.Topic, m.Payload)
			}
		}
	}
}

// alive fails if the broker has ended the device's connection.
func (d *chainDev) alive() {
	d.t.Helper()
	select {
	case <-d.c.Gone():
		d.t.Fatalf("%s (%s): the broker closed the connection", d.user, d.c.ID)
	default:
	}
}

// chainResp is a response on im/u/{me}/res.
type chainResp struct {
	Raw  []byte
	Keys map[string]json.RawMessage
	Rid  string          `json:"rid"`
	ID   string          `json:"id"`
	OK   bool            `json:"ok"`
	Data json.RawMessage `json:"data"`
	Err  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r chainResp) code() string {
	if r.OK {
		return "ok"
	}
	if r.Err == nil {
		return "(no error member)"
	}
	return r.Err.Code
}

func (r chainResp) has(key string) bool { _, ok := r.Keys[key]; return ok }

func chainParseResp(t *testing.T, b []byte) chainResp {
	t.Helper()
	var r chainResp
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("response %q is not JSON: %v", b, err)
	}
	if err := json.Unmarshal(b, &r.Keys); err != nil {
		t.Fatalf("response %q is not an object: %v", b, err)
	}
	r.Raw = b
	if r.OK == (r.Err != nil) || (!r.OK && (r.Err.Code == "" || r.Err.Message == "")) {
		t.Fatalf("response %s: ok and error disagree, or the error lacks code or message", b)
	}
	return r
}

// send publishes payload to im/req at QoS 1 and returns the MQTT 5 PUBACK
// reason code (0 on 3.1.1) and the response.
func (d *chainDev) send(payload []byte) (byte, chainResp) {
	d.t.Helper()
	ack, err := d.c.Publish("im/req", 1, payload)
	if err != nil {
		d.t.Fatalf("%s: publish to im/req: %v", d.user, err)
	}
	return ack, chainParseResp(d.t, d.take(d.resTopic()).Payload)
}

// do sends a request built from op and key/value pairs, with a fresh rid,
// and checks the rid is echoed and the publish acknowledged with success.
func (d *chainDev) do(op string, kv ...string) chainResp {
	d.t.Helper()
	d.n++
	req := map[string]string{"rid": fmt.Sprintf("%s-%d", d.user, d.n), "op": op}
	for i := 0; i+1 < len(kv); i += 2 {
		req[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(req)
	ack, r := d.send(b)
	if ack != 0 {
		d.t.Fatalf("%s: %s: PUBACK 0x%02x; a request is always acknowledged with success", d.user, b, ack)
	}
	if r.Rid != req["rid"] {
		d.t.Fatalf("%s: %s: response %s does not echo the rid", d.user, b, r.Raw)
	}
	return r
}

// ok runs a request that must succeed.
func (d *chainDev) ok(op string, kv ...string) chainResp {
	d.t.Helper()
	r := d.do(op, kv...)
	if !r.OK {
		d.t.Fatalf("%s: %s %v: %s; want success", d.user, op, kv, r.Raw)
	}
	return r
}

// fail runs a request that must fail with code.
func (d *chainDev) fail(code, op string, kv ...string) chainResp {
	d.t.Helper()
	r := d.do(op, kv...)
	if r.code() != code {
		d.t.Fatalf("%s: %s %v: %s; want error %s", d.user, op, kv, r.Raw, code)
	}
	return r
}

// chainEvent is an event of PROTOCOL.md section 6.
type chainEvent struct {
	Raw  []byte
	Keys map[string]json.RawMessage
	Type string `json:"type"`
	TS   int64  `json:"ts"`
	From string `json:"from"`
	Note string `json:"note"`
	User string `json:"user"`
}

// event returns the next event.
func (d *chainDev) event() chainEvent {
	d.t.Helper()
	m := d.take(d.evTopic())
	var e chainEvent
	if err := json.Unmarshal(m.Payload, &e); err != nil {
		d.t.Fatalf("%s: event %q: %v", d.user, m.Payload, err)
	}
	_ = json.Unmarshal(m.Payload, &e.Keys)
	e.Raw = m.Payload
	return e
}

// expectEvent takes the next event and checks its type and fields (from,
// note, user; "" means the key must be absent) and that ts lies in
// [after, now].
func (d *chainDev) expectEvent(typ, from, note, user string, after int64) chainEvent {
	d.t.Helper()
	e := d.event()
	if e.Type != typ || e.From != from || e.Note != note || e.User != user {
		d.t.Fatalf("%s: event %s; want type %q from %q note %q user %q", d.user, e.Raw, typ, from, note, user)
	}
	for k, v := range map[string]string{"from": from, "note": note, "user": user} {
		if _, has := e.Keys[k]; has != (v != "") {
			d.t.Fatalf("%s: event %s: key %q present=%v; want %v", d.user, e.Raw, k, has, v != "")
		}
	}
	if now := time.Now().UnixMilli(); e.TS < after || e.TS > now {
		d.t.Fatalf("%s: event %s: ts %d outside [%d, %d]", d.user, e.Raw, e.TS, after, now)
	}
	return e
}

// chainPending is an entry of friend.list's incoming or outgoing.
type chainPending struct {
	User string  `json:"user"`
	Note *string `json:"note"`
	TS   int64   `json:"ts"`
}

func (p chainPending) String() string {
	if p.Note == nil {
		return fmt.Sprintf("{%s ts=%d}", p.User, p.TS)
	}
	return fmt.Sprintf("{%s %q ts=%d}", p.User, *p.Note, p.TS)
}

type chainFriendList struct {
	Friends  []string       `json:"friends"`
	Incoming []chainPending `json:"incoming"`
	Outgoing []chainPending `json:"outgoing"`
}

// friendList runs friend.list and checks its shape: three arrays (never
// null), pending entries with a user and a positive ts, a note only when one
// was given.
func (d *chainDev) friendList() chainFriendList {
	d.t.Helper()
	r := d.ok("friend.list")
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Data, &raw); err != nil {
		d.t.Fatalf("%s: friend.list data %s: %v", d.user, r.Data, err)
	}
	for _, k := range []string{"friends", "incoming", "outgoing"} {
		if v := strings.TrimSpace(string(raw[k])); !strings.HasPrefix(v, "[") {
			d.t.Fatalf("%s: friend.list %s: %q is %s; want an array", d.user, r.Data, k, v)
		}
	}
	var l chainFriendList
	if err := json.Unmarshal(r.Data, &l); err != nil {
		d.t.Fatalf("%s: friend.list data %s: %v", d.user, r.Data, err)
	}
	for _, p := range append(slices.Clone(l.Incoming), l.Outgoing...) {
		if p.User == "" || p.TS <= 0 || (p.Note != nil && *p.Note == "") {
			d.t.Fatalf("%s: friend.list %s: bad pending entry %v", d.user, r.Data, p)
		}
	}
	return l
}

// expectFriends checks friend.list: friends as a set, and the users of the
// pending requests each way, in order.
func (d *chainDev) expectFriends(friends, incoming, outgoing []string) chainFriendList {
	d.t.Helper()
	l := d.friendList()
	got := slices.Sorted(slices.Values(l.Friends))
	want := slices.Sorted(slices.Values(friends))
	users := func(ps []chainPending) []string {
		out := []string{}
		for _, p := range ps {
			out = append(out, p.User)
		}
		return out
	}
	if incoming == nil {
		incoming = []string{}
	}
	if outgoing == nil {
		outgoing = []string{}
	}
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) || !slices.Equal(users(l.Incoming), incoming) || !slices.Equal(users(l.Outgoing), outgoing) {
		d.t.Fatalf("%s: friend.list = friends %v incoming %v outgoing %v; want friends %v incoming %v outgoing %v",
			d.user, l.Friends, l.Incoming, l.Outgoing, want, incoming, outgoing)
	}
	return l
}

// blockList runs block.list and returns the ids.
func (d *chainDev) blockList() []string {
	d.t.Helper()
	r := d.ok("block.list")
	var l struct {
		Blocked []string `json:"blocked"`
	}
	if err := json.Unmarshal(r.Data, &l); err != nil || l.Blocked == nil {
		d.t.Fatalf("%s: block.list data %s: want {\"blocked\": [...]} (%v)", d.user, r.Data, err)
	}
	return l.Blocked
}

// dm publishes a message to im/dm/{peer} and returns the MQTT 5 PUBACK
// reason code (0 on 3.1.1).
func (d *chainDev) dm(peer string, qos byte, payload string) byte {
	d.t.Helper()
	ack, err := d.c.Publish("im/dm/"+peer, qos, []byte(payload))
	if err != nil {
		d.t.Fatalf("%s: publish to im/dm/%s: %v", d.user, peer, err)
	}
	return ack
}

// chainMsg is a delivered message (PROTOCOL.md section 4).
type chainMsg struct {
	Raw  []byte
	Conv string          `json:"conv"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	From string          `json:"from"`
	TS   int64           `json:"ts"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
}

// takeDM returns the next message of the DM with peer.
func (d *chainDev) takeDM(peer string) chainMsg {
	d.t.Helper()
	m := d.take(d.dmTopic(peer))
	var out chainMsg
	if err := json.Unmarshal(m.Payload, &out); err != nil {
		d.t.Fatalf("%s: message %q: %v", d.user, m.Payload, err)
	}
	out.Raw = m.Payload
	return out
}

// sendDM sends an accepted DM and checks both ends receive it with seq.
func chainSendDM(t *testing.T, from, to *chainDev, id string, seq uint64) {
	t.Helper()
	if ack := from.dm(to.user, 1, fmt.Sprintf(`{"id":%q,"body":"hello from %s"}`, id, from.user)); ack != 0 {
		t.Fatalf("%s -> %s: PUBACK 0x%02x; want success", from.user, to.user, ack)
	}
	for _, d := range []*chainDev{to, from} {
		peer := to.user
		if d == to {
			peer = from.user
		}
		m := d.takeDM(peer)
		if m.ID != id || m.From != from.user || m.Seq != seq {
			t.Fatalf("%s got %s; want id %s from %s seq %d", d.user, m.Raw, id, from.user, seq)
		}
	}
}

// refusedDM sends a DM that must be refused: the publish is acknowledged
// (MQTT 5 with reason), the connection stays, and the device gets the error
// on res, echoing id when it is not "".
func (d *chainDev) refusedDM(peer string, qos byte, payload, code, id string, reason byte) {
	d.t.Helper()
	d.refusedPublish("im/dm/"+peer, qos, payload, code, id, reason)
}

func (d *chainDev) refusedPublish(topic string, qos byte, payload, code, id string, reason byte) {
	d.t.Helper()
	ack, err := d.c.Publish(topic, qos, []byte(payload))
	if err != nil {
		d.t.Fatalf("%s: publish to %s (%.40q): %v", d.user, topic, payload, err)
	}
	want := byte(0)
	if d.c.V5 && qos > 0 {
		want = reason
	}
	if ack != want {
		d.t.Fatalf("%s: publish to %s (%.40q): acknowledged with 0x%02x; want 0x%02x", d.user, topic, payload, ack, want)
	}
	r := chainParseResp(d.t, d.take(d.resTopic()).Payload)
	if r.OK || r.code() != code {
		d.t.Fatalf("%s: publish to %s (%.40q): response %s; want error %s", d.user, topic, payload, r.Raw, code)
	}
	if r.has("rid") {
		d.t.Fatalf("%s: publish to %s: response %s has a rid", d.user, topic, r.Raw)
	}
	if r.ID != id || r.has("id") != (id != "") {
		d.t.Fatalf("%s: publish to %s (%.40q): response %s; want id %q echoed", d.user, topic, payload, r.Raw, id)
	}
	d.alive()
}

// chainBefriend makes a and b friends through a request and its acceptance,
// and consumes the events it causes.
func chainBefriend(t *testing.T, a, b *chainDev) {
	t.Helper()
	t0 := time.Now().UnixMilli()
	a.ok("friend.request", "user", b.user)
	b.expectEvent("friend.request", a.user, "", "", t0)
	b.ok("friend.accept", "user", a.user)
	a.expectEvent("friend.added", "", "", b.user, t0)
	b.expectEvent("friend.added", "", "", a.user, t0)
}

// TestChainFriendFlow walks PROTOCOL.md section 5's friend ops on real
// clients: request with a note, the no-op cases, accept, mutual requests,
// reject, remove, and friend.list after each step, with a second device of
// alice to show that events reach every device and responses only the one
// that asked.
func TestChainFriendFlow(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob", "carol", "dave")
			alice := chainConnect(t, b, "alice", v5)
			tab := chainConnectAs(t, b, "alice", "alice-tab", v5)
			bob := chainConnect(t, b, "bob", v5)
			carol := chainConnect(t, b, "carol", v5)
			dave := chainConnect(t, b, "dave", v5)

			for _, d := range []*chainDev{alice, bob, carol, dave} {
				d.expectFriends(nil, nil, nil)
			}

			// A request with a note: bob is told, alice is not.
			t0 := time.Now().UnixMilli()
			alice.ok("friend.request", "user", "bob", "note", "hi bob, it's alice")
			ev := bob.expectEvent("friend.request", "alice", "hi bob, it's alice", "", t0)
			lo := alice.expectFriends(nil, nil, []string{"bob"})
			li := bob.expectFriends(nil, []string{"alice"}, nil)
			if p := lo.Outgoing[0]; p.Note == nil || *p.Note != "hi bob, it's alice" || p.TS != ev.TS {
				t.Fatalf("alice's outgoing %v; want the note and ts %d of the event", p, ev.TS)
			}
			if p := li.Incoming[0]; p.Note == nil || *p.Note != "hi bob, it's alice" || p.TS != ev.TS {
				t.Fatalf("bob's incoming %v; want the note and ts %d of the event", p, ev.TS)
			}
			// The other device of alice saw no response and no event.
			chainQuiet(t, map[*chainDev][]string{alice: {alice.evTopic()}, tab: nil})

			// Asking again while pending: success, nothing else; the first
			// note stays.
			alice.ok("friend.request", "user", "bob", "note", "second note")
			lo2 := alice.expectFriends(nil, nil, []string{"bob"})
			if p := lo2.Outgoing[0]; *p.Note != "hi bob, it's alice" || p.TS != ev.TS {
				t.Fatalf("re-request changed the pending request to %v", p)
			}

			// Requests that are errors.
			alice.fail("bad_request", "friend.request", "user", "alice")
			alice.fail("bad_request", "friend.accept", "user", "bob") // alice's own request, not bob's
			alice.fail("bad_request", "friend.reject", "user", "bob")
			bob.fail("bad_request", "friend.accept", "user", "carol")
			bob.fail("bad_request", "friend.reject", "user", "dave")
			alice.fail("not_friends", "friend.remove", "user", "bob") // pending is not friends
			chainQuiet(t, map[*chainDev][]string{bob: {bob.evTopic()}, alice: {alice.evTopic()}, tab: nil})

			// Accept: both become friends and every device of both is told.
			t1 := time.Now().UnixMilli()
			bob.ok("friend.accept", "user", "alice")
			alice.expectEvent("friend.added", "", "", "bob", t1)
			tab.expectEvent("friend.added", "", "", "bob", t1)
			bob.expectEvent("friend.added", "", "", "alice", t1)
			alice.expectFriends([]string{"bob"}, nil, nil)
			bob.expectFriends([]string{"alice"}, nil, nil)
			bob.fail("bad_request", "friend.accept", "user", "alice") // nothing pending any more
			tab.collect()
			if len(tab.got) != 0 {
				t.Fatalf("alice's second device got %q; want nothing", tab.got[0].Payload)
			}

			// Requesting a friend: success, nothing else, either way.
			alice.ok("friend.request", "user", "bob", "note", "again?")
			bob.ok("friend.request", "user", "alice")
			chainQuiet(t, map[*chainDev][]string{bob: {bob.evTopic()}, alice: {alice.evTopic()}, tab: {tab.evTopic()}})
			alice.expectFriends([]string{"bob"}, nil, nil)
			bob.expectFriends([]string{"alice"}, nil, nil)

			// Mutual requests: the second makes them friends at once.
			t2 := time.Now().UnixMilli()
			carol.ok("friend.request", "user", "dave", "note", "c to d")
			dave.expectEvent("friend.request", "carol", "c to d", "", t2)
			carol.expectFriends(nil, nil, []string{"dave"})
			dave.ok("friend.request", "user", "carol", "note", "d to c")
			dave.expectEvent("friend.added", "", "", "carol", t2)
			carol.expectEvent("friend.added", "", "", "dave", t2)
			carol.expectFriends([]string{"dave"}, nil, nil)
			dave.expectFriends([]string{"carol"}, nil, nil)

			// Reject: the request goes, the requester hears nothing.
			t3 := time.Now().UnixMilli()
			carol.ok("friend.request", "user", "alice", "note", "c to a")
			alice.expectEvent("friend.request", "carol", "c to a", "", t3)
			tab.expectEvent("friend.request", "carol", "c to a", "", t3)
			alice.expectFriends([]string{"bob"}, []string{"carol"}, nil)
			alice.ok("friend.reject", "user", "carol")
			carol.quiet(carol.evTopic())
			alice.expectFriends([]string{"bob"}, nil, nil)
			carol.expectFriends([]string{"dave"}, nil, nil)
			alice.fail("bad_request", "friend.reject", "user", "carol")
			alice.fail("bad_request", "friend.accept", "user", "carol")
			// Fence: the next event carol gets is one caused after the
			// reject, so no event of the reject was queued before it.
			t4 := time.Now().UnixMilli()
			alice.ok("friend.request", "user", "carol")
			carol.expectEvent("friend.request", "alice", "", "", t4)
			carol.expectFriends([]string{"dave"}, []string{"alice"}, nil)
			alice.expectFriends([]string{"bob"}, nil, []string{"carol"})
			// A rejected requester may ask again, and be accepted.
			carol.ok("friend.accept", "user", "alice")
			alice.expectEvent("friend.added", "", "", "carol", t4)
			tab.expectEvent("friend.added", "", "", "carol", t4)
			carol.expectEvent("friend.added", "", "", "alice", t4)
			alice.expectFriends([]string{"bob", "carol"}, nil, nil)

			// Remove: both are told, with user = the other one.
			t5 := time.Now().UnixMilli()
			bob.ok("friend.remove", "user", "alice")
			bob.expectEvent("friend.removed", "", "", "alice", t5)
			alice.expectEvent("friend.removed", "", "", "bob", t5)
			tab.expectEvent("friend.removed", "", "", "bob", t5)
			alice.expectFriends([]string{"carol"}, nil, nil)
			bob.expectFriends(nil, nil, nil)
			bob.fail("not_friends", "friend.remove", "user", "alice")
			alice.fail("not_friends", "friend.remove", "user", "bob")
			alice.fail("not_friends", "friend.remove", "user", "dave")
			alice.refusedDM("bob", 1, `{"id":"after-remove","body":"x"}`, "not_friends", "after-remove", 0x87)

			// Every response went to the device that asked: alice's tab
			// asked nothing and got no response.
			tab.collect()
			for _, m := range tab.got {
				if m.Topic == tab.resTopic() {
					t.Fatalf("alice's second device got a response meant for the first: %s", m.Payload)
				}
			}
			// And the tab's own request is answered on the tab only.
			tab.expectFriends([]string{"carol"}, nil, nil)
			alice.quiet(alice.resTopic())
		})
	}
}

// TestChainBlocks covers block.add/remove/list in both directions: requests
// and DMs across a block are not_allowed, the blocked user is never told,
// the friendship survives, and block.remove restores DMs.
func TestChainBlocks(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob", "carol")
			alice := chainConnect(t, b, "alice", v5)
			bob := chainConnect(t, b, "bob", v5)
			carol := chainConnect(t, b, "carol", v5)
			chainBefriend(t, alice, bob)

			if l := alice.blockList(); len(l) != 0 {
				t.Fatalf("alice's block.list = %v; want []", l)
			}

			// alice blocks bob, her friend: bob hears nothing.
			alice.ok("block.add", "user", "bob")
			if l := alice.blockList(); !slices.Equal(l, []string{"bob"}) {
				t.Fatalf("alice's block.list = %v; want [bob]", l)
			}
			if l := bob.blockList(); len(l) != 0 {
				t.Fatalf("bob's block.list = %v; want [] (blocks are the blocker's)", l)
			}
			// The friendship survives the block.
			alice.expectFriends([]string{"bob"}, nil, nil)
			bob.expectFriends([]string{"alice"}, nil, nil)

			// DMs either way are refused, the id echoed.
			alice.refusedDM("bob", 1, `{"id":"a1","body":"from the blocker"}`, "not_allowed", "a1", 0x87)
			bob.refusedDM("alice", 1, `{"id":"b1","body":"from the blocked"}`, "not_allowed", "b1", 0x87)
			bob.refusedDM("alice", 0, `{"id":"b2","body":"qos 0"}`, "not_allowed", "b2", 0x87)
			chainQuiet(t, map[*chainDev][]string{bob: {bob.evTopic(), bob.dmTopic("alice")}, alice: {alice.evTopic(), alice.dmTopic("bob")}})

			// Blocking again is a no-op; blocking oneself or nobody is not.
			alice.ok("block.add", "user", "bob")
			alice.fail("bad_request", "block.add", "user", "alice")
			alice.fail("no_such_user", "block.add", "user", "zed")
			alice.fail("bad_request", "block.add", "user", "Not An Id")
			alice.fail("bad_request", "block.add")

			// A stranger blocked: requests either way are not_allowed and
			// tell nobody.
			alice.ok("block.add", "user", "carol")
			if l := alice.blockList(); !slices.Equal(l, []string{"bob", "carol"}) {
				t.Fatalf("alice's block.list = %v; want [bob carol]", l)
			}
			carol.fail("not_allowed", "friend.request", "user", "alice", "note", "let me in")
			alice.fail("not_allowed", "friend.request", "user", "carol")
			chainQuiet(t, map[*chainDev][]string{alice: {alice.evTopic()}, carol: {carol.evTopic()}})
			alice.expectFriends([]string{"bob"}, nil, nil)
			carol.expectFriends(nil, nil, nil)
			carol.refusedDM("alice", 1, `{"id":"c1","body":"x"}`, "not_allowed", "c1", 0x87)

			// Unblock bob: DMs flow again, and the first one stored is seq
			// 1, so none of the refused ones was stored.
			alice.ok("block.remove", "user", "bob")
			if l := alice.blockList(); !slices.Equal(l, []string{"carol"}) {
				t.Fatalf("alice's block.list = %v; want [carol]", l)
			}
			chainSendDM(t, alice, bob, "after-unblock-1", 1)
			chainSendDM(t, bob, alice, "after-unblock-2", 2)
			alice.ok("block.remove", "user", "bob") // not blocked: nothing happens

			// The other direction: bob blocks alice.
			bob.ok("block.add", "user", "alice")
			alice.refusedDM("bob", 1, `{"id":"a3","body":"x"}`, "not_allowed", "a3", 0x87)
			bob.refusedDM("alice", 1, `{"id":"b3","body":"x"}`, "not_allowed", "b3", 0x87)
			bob.fail("not_allowed", "friend.request", "user", "alice") // friends, but blocked
			alice.quiet(alice.evTopic(), alice.dmTopic("bob"))
			bob.expectFriends([]string{"alice"}, nil, nil)
			bob.ok("block.remove", "user", "alice")
			chainSendDM(t, alice, bob, "after-unblock-3", 3)

			// With both blocks gone between carol and alice, a request
			// goes through again.
			alice.ok("block.remove", "user", "carol")
			t0 := time.Now().UnixMilli()
			carol.ok("friend.request", "user", "alice", "note", "now?")
			alice.expectEvent("friend.request", "carol", "now?", "", t0)

			// A block while a request is pending: the request can no
			// longer become a friendship from the blocked side.
			alice.ok("block.add", "user", "carol")
			carol.fail("not_allowed", "friend.request", "user", "alice")
			if l := alice.blockList(); !slices.Equal(l, []string{"carol"}) {
				t.Fatalf("alice's block.list = %v; want [carol]", l)
			}
		})
	}
}
