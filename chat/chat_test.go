package chat_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// recNotifier records whose streams the service says grew.
type recNotifier struct {
	mu       sync.Mutex
	appended [][]string
}

func (n *recNotifier) Appended(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.appended = append(n.appended, slices.Clone(users))
}
func (n *recNotifier) Transient(string, []byte) {}
func (n *recNotifier) Online(string) bool       { return false }

// take returns and forgets what was recorded, each call's users sorted;
// calls naming nobody do nothing, so they are left out.
func (n *recNotifier) take() [][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out [][]string
	for _, u := range n.appended {
		if len(u) > 0 {
			slices.Sort(u)
			out = append(out, u)
		}
	}
	n.appended = nil
	return out
}

// chatEnv is a Service over a real bolt store in a temporary directory.
type chatEnv struct {
	t   *testing.T
	db  *bolt.DB
	s   *chat.Service
	n   *recNotifier
	now time.Time
}

func newChatEnv(t *testing.T, policy acl.DMPolicy, users ...string) *chatEnv {
	t.Helper()
	db, err := bolt.OpenDir(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, u := range users {
		if err := db.CreateUser(storage.User{ID: u, Role: imqtt.RoleUser, Hash: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	e := &chatEnv{t: t, db: db, n: &recNotifier{}, now: time.UnixMilli(1764250000000)}
	e.s = chat.New(chat.Options{Store: db, Notifier: e.n, DMPolicy: policy, MaxPayload: 1024,
		Now: func() time.Time { return e.now }})
	return e
}

type chatResp struct {
	Rid   string          `json:"rid"`
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code string `json:"code"`
	} `json:"error"`
}

// req runs a request as user and checks the code it reports agrees with
// the response ("" and ok for success).
func (e *chatEnv) req(user, payload string) chatResp {
	e.t.Helper()
	resp, _, code := e.s.Request(chat.Caller{User: user, ClientID: user + "-dev"}, []byte(payload))
	var r chatResp
	if err := json.Unmarshal(resp, &r); err != nil {
		e.t.Fatalf("response %q: %v", resp, err)
	}
	if r.OK != (code == "") || (!r.OK && (r.Error == nil || r.Error.Code != string(code))) {
		e.t.Fatalf("response %s disagrees with code %q", resp, code)
	}
	// PROTOCOL.md section 5: every success carries data, an object, and
	// no error; an error carries no data.
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(resp, &shape); err != nil {
		e.t.Fatalf("response %s: %v", resp, err)
	}
	d, hasData := shape["data"]
	_, hasErr := shape["error"]
	if r.OK && (!hasData || len(d) == 0 || d[0] != '{' || hasErr) {
		e.t.Fatalf("success %s: want a data object and no error", resp)
	}
	if !r.OK && hasData {
		e.t.Fatalf("error %s carries data", resp)
	}
	return r
}

func (e *chatEnv) ok(user, payload string) chatResp {
	e.t.Helper()
	r := e.req(user, payload)
	if !r.OK {
		e.t.Fatalf("%s: %s: error %s", user, payload, r.Error.Code)
	}
	return r
}

func (e *chatEnv) fail(user, payload string, code imqtt.Code) {
	e.t.Helper()
	r := e.req(user, payload)
	if r.OK || r.Error.Code != string(code) {
		e.t.Fatalf("%s: %s: ok=%v error %+v; want %s", user, payload, r.OK, r.Error, code)
	}
}

// events returns the events stored in user's stream, as JSON objects.
func (e *chatEnv) events(user string) []map[string]any {
	e.t.Helper()
	es, err := e.db.ReadStream(user, 0, 1000, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, en := range es {
		if en.Conv != "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(en.Payload, &m); err != nil {
			e.t.Fatalf("stored event %q: %v", en.Payload, err)
		}
		out = append(out, m)
	}
	return out
}

func (e *chatEnv) wantNotified(want ...[]string) {
	e.t.Helper()
	got := e.n.take()
	if len(got) != len(want) {
		e.t.Fatalf("notified %v; want %v", got, want)
	}
	for i := range got {
		if !slices.Equal(got[i], want[i]) {
			e.t.Fatalf("notified %v; want %v", got, want)
		}
	}
}

func eventTypes(evs []map[string]any) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprint(ev["type"]))
	}
	return out
}

// Events are stored in the stream of every user they concern, in the same
// transaction as the change, and the notifier learns whose streams grew
// only after that; no-op requests store and notify nothing.
func TestFriendOpsStoreEventsAndNotify(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")

	e.ok("alice", `{"rid":"1","op":"friend.request","user":"bob","note":"hi"}`)
	e.wantNotified([]string{"bob"})
	evs := e.events("bob")
	if len(evs) != 1 || evs[0]["type"] != "friend.request" || evs[0]["from"] != "alice" || evs[0]["note"] != "hi" || evs[0]["ts"] != float64(e.now.UnixMilli()) {
		t.Fatalf("bob's stream: %v", evs)
	}
	if evs := e.events("alice"); len(evs) != 0 {
		t.Fatalf("alice's stream: %v; want nothing for her own request", evs)
	}

	// No-ops: asking again, and asking a friend later on.
	e.ok("alice", `{"rid":"2","op":"friend.request","user":"bob","note":"again"}`)
	e.wantNotified()

	e.ok("bob", `{"rid":"3","op":"friend.accept","user":"alice"}`)
	e.wantNotified([]string{"alice", "bob"})
	if got := eventTypes(e.events("alice")); !slices.Equal(got, []string{"friend.added"}) {
		t.Fatalf("alice's stream: %v", got)
	}
	if got := eventTypes(e.events("bob")); !slices.Equal(got, []string{"friend.request", "friend.added"}) {
		t.Fatalf("bob's stream: %v", got)
	}
	e.ok("bob", `{"rid":"4","op":"friend.request","user":"alice"}`)
	e.wantNotified()

	// Reject: nobody's stream grows.
	e.ok("carol", `{"rid":"5","op":"friend.request","user":"alice"}`)
	e.wantNotified([]string{"alice"})
	e.ok("alice", `{"rid":"6","op":"friend.reject","user":"carol"}`)
	e.wantNotified()
	if got := eventTypes(e.events("carol")); len(got) != 0 {
		t.Fatalf("carol's stream after the reject: %v", got)
	}

	// Block: the blocked user's stream does not grow.
	e.ok("alice", `{"rid":"7","op":"block.add","user":"carol"}`)
	e.wantNotified()
	if got := eventTypes(e.events("carol")); len(got) != 0 {
		t.Fatalf("carol's stream after the block: %v", got)
	}

	// Remove: both told.
	e.ok("alice", `{"rid":"8","op":"friend.remove","user":"bob"}`)
	e.wantNotified([]string{"alice", "bob"})
	evs = e.events("bob")
	if last := evs[len(evs)-1]; last["type"] != "friend.removed" || last["user"] != "alice" {
		t.Fatalf("bob's last event: %v", last)
	}

	// Refused requests notify nobody.
	e.fail("alice", `{"rid":"9","op":"friend.remove","user":"bob"}`, imqtt.CodeNotFriends)
	e.fail("carol", `{"rid":"10","op":"friend.request","user":"alice"}`, imqtt.CodeNotAllowed)
	e.fail("alice", `{"rid":"11","op":"friend.request","user":"zed"}`, imqtt.CodeNoSuchUser)
	e.wantNotified()
}

// Mutual requests turn into a friendship in one step: no pending request
// is left either way.
func TestMutualRequest(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob")
	e.ok("alice", `{"rid":"1","op":"friend.request","user":"bob"}`)
	e.ok("bob", `{"rid":"2","op":"friend.request","user":"alice"}`)
	err := e.db.View(func(tx storage.Tx) error {
		if ok, err := tx.AreFriends("alice", "bob"); err != nil || !ok {
			return fmt.Errorf("AreFriends = %v, %v", ok, err)
		}
		in, out, err := tx.FriendRequests("alice")
		if err != nil || len(in) != 0 || len(out) != 0 {
			return fmt.Errorf("alice's requests: %v %v %v", in, out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := eventTypes(e.events("alice")); !slices.Equal(got, []string{"friend.added"}) {
		t.Fatalf("alice's stream: %v", got)
	}
	if got := eventTypes(e.events("bob")); !slices.Equal(got, []string{"friend.request", "friend.added"}) {
		t.Fatalf("bob's stream: %v", got)
	}
}

func TestSendDM(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol")
	e.ok("alice", `{"rid":"1","op":"friend.request","user":"bob"}`)
	e.ok("bob", `{"rid":"2","op":"friend.accept","user":"alice"}`)
	e.n.take()

	res, err := e.s.SendDM("alice", "bob", []byte(`{"id":"m1","body":"hi"}`))
	if err != nil || res.Seq != 1 || res.ID != "m1" || res.Duplicate || res.Conv != imqtt.DMConv("alice", "bob") {
		t.Fatalf("SendDM = %+v, %v", res, err)
	}
	e.wantNotified([]string{"alice", "bob"})
	// An idempotent retry: same seq, nothing stored or notified again.
	res, err = e.s.SendDM("alice", "bob", []byte(`{"id":"m1","body":"hi again"}`))
	if err != nil || res.Seq != 1 || !res.Duplicate {
		t.Fatalf("retry: SendDM = %+v, %v; want the duplicate of seq 1", res, err)
	}
	e.wantNotified()
	// The same id from the other side is another message.
	if res, err = e.s.SendDM("bob", "alice", []byte(`{"id":"m1","body":"mine"}`)); err != nil || res.Seq != 2 || res.Duplicate {
		t.Fatalf("bob's m1: SendDM = %+v, %v; want seq 2", res, err)
	}
	// No id: one is assigned, different each time.
	r1, err1 := e.s.SendDM("alice", "bob", []byte(`{"body":1}`))
	r2, err2 := e.s.SendDM("alice", "bob", []byte(`{"body":1}`))
	if err1 != nil || err2 != nil || r1.ID == "" || r1.ID == r2.ID || r2.Seq != r1.Seq+1 {
		t.Fatalf("assigned ids: %+v %v, %+v %v", r1, err1, r2, err2)
	}
	e.n.take()

	refusals := []struct {
		name    string
		from    string
		to      string
		payload string
		want    imqtt.Code
		id      string
	}{
		{"stranger", "alice", "carol", `{"id":"x1","body":1}`, imqtt.CodeNotFriends, "x1"},
		{"unknown", "alice", "zed", `{"id":"x2","body":1}`, imqtt.CodeNoSuchUser, "x2"},
		{"oneself", "alice", "alice", `{"id":"x3","body":1}`, imqtt.CodeBadRequest, "x3"},
		{"oneself, bad payload", "alice", "alice", `nope`, imqtt.CodeBadRequest, ""},
		{"no body", "alice", "bob", `{"id":"x4"}`, imqtt.CodeBadRequest, "x4"},
		{"too large", "alice", "bob", `{"id":"x5","body":"` + string(make([]byte, 1100)) + `"}`, imqtt.CodeTooLarge, ""},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			res, err := e.s.SendDM(r.from, r.to, []byte(r.payload))
			if imqtt.ErrorCode(err) != r.want || res.ID != r.id {
				t.Fatalf("SendDM = %+v, %v; want %s with id %q", res, err, r.want, r.id)
			}
		})
	}
	e.wantNotified()

	// A block, either way, refuses; the friendship stays, and unblocking
	// restores the DM.
	e.ok("bob", `{"rid":"3","op":"block.add","user":"alice"}`)
	for _, p := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
		if _, err := e.s.SendDM(p[0], p[1], []byte(`{"body":1}`)); !errors.Is(err, imqtt.ErrNotAllowed) {
			t.Fatalf("%s -> %s across a block: %v; want not_allowed", p[0], p[1], err)
		}
	}
	e.ok("bob", `{"rid":"4","op":"block.remove","user":"alice"}`)
	if res, err := e.s.SendDM("alice", "bob", []byte(`{"body":1}`)); err != nil || res.Seq != r2.Seq+1 {
		t.Fatalf("after unblock: %+v, %v; want seq %d (nothing refused was stored)", res, err, r2.Seq+1)
	}
}

// With dm_policy anyone, strangers may DM, but blocks still hold.
func TestSendDMPolicyAnyone(t *testing.T) {
	e := newChatEnv(t, acl.DMAnyone, "alice", "carol")
	if res, err := e.s.SendDM("alice", "carol", []byte(`{"body":"hi stranger"}`)); err != nil || res.Seq != 1 {
		t.Fatalf("stranger DM under dm_policy anyone: %+v, %v", res, err)
	}
	e.ok("carol", `{"rid":"1","op":"block.add","user":"alice"}`)
	if _, err := e.s.SendDM("alice", "carol", []byte(`{"body":"hi"}`)); !errors.Is(err, imqtt.ErrNotAllowed) {
		t.Fatalf("DM to a blocker under dm_policy anyone: %v; want not_allowed", err)
	}
	if _, err := e.s.SendDM("carol", "alice", []byte(`{"body":"hi"}`)); !errors.Is(err, imqtt.ErrNotAllowed) {
		t.Fatalf("DM from the blocker under dm_policy anyone: %v; want not_allowed", err)
	}
}

// Lists are what the store holds, in the shapes of PROTOCOL.md section 5.
func TestLists(t *testing.T) {
	e := newChatEnv(t, acl.DMFriends, "alice", "bob", "carol", "dave")
	r := e.ok("alice", `{"rid":"1","op":"friend.list"}`)
	if got := string(r.Data); got != `{"friends":[],"incoming":[],"outgoing":[]}` {
		t.Fatalf("empty friend.list data = %s", got)
	}
	if r := e.ok("alice", `{"rid":"2","op":"block.list"}`); string(r.Data) != `{"blocked":[]}` {
		t.Fatalf("empty block.list data = %s", r.Data)
	}
	ts := e.now.UnixMilli()
	e.ok("alice", `{"rid":"3","op":"friend.request","user":"bob","note":"hi bob"}`)
	e.ok("carol", `{"rid":"4","op":"friend.request","user":"alice"}`)
	e.ok("dave", `{"rid":"5","op":"friend.request","user":"alice"}`)
	e.ok("alice", `{"rid":"6","op":"friend.accept","user":"dave"}`)
	e.ok("alice", `{"rid":"7","op":"block.add","user":"carol"}`)
	e.ok("alice", `{"rid":"8","op":"block.add","user":"bob"}`)
	r = e.ok("alice", `{"rid":"9","op":"friend.list"}`)
	want := fmt.Sprintf(`{"friends":["dave"],"incoming":[{"user":"carol","ts":%d}],"outgoing":[{"user":"bob","note":"hi bob","ts":%d}]}`, ts, ts)
	if string(r.Data) != want {
		t.Fatalf("friend.list data =\n%s\nwant\n%s", r.Data, want)
	}
	if r := e.ok("alice", `{"rid":"10","op":"block.list"}`); string(r.Data) != `{"blocked":["bob","carol"]}` {
		t.Fatalf("block.list data = %s", r.Data)
	}
}
