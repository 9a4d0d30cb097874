package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// reuseAdmin sends an admin API request as operator root and fails the
// test unless the status is want.
func reuseAdmin(t *testing.T, b *brokertest.B, method, path, body string, want int) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+b.Addr("http")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("root", "pw-root")
	resp, err := (&http.Client{Timeout: brokertest.Timeout}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, want, out)
	}
}

// reuseMsg is a delivered message or a response, whichever fields it has.
type reuseMsg struct {
	Conv string          `json:"conv"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	From string          `json:"from"`
	Rid  string          `json:"rid"`
	OK   bool            `json:"ok"`
	Data json.RawMessage `json:"data"`
}

// reuseNext returns the next message c gets on topic, passing over others.
func reuseNext(t *testing.T, c *brokertest.Client, topic string) reuseMsg {
	t.Helper()
	m := c.NextOn(t, topic)
	var r reuseMsg
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("%s on %s: %v", m.Payload, topic, err)
	}
	return r
}

// reuseDevice connects user's device clientID and subscribes to its topics.
func reuseDevice(t *testing.T, b *brokertest.B, user, clientID string) *brokertest.Client {
	t.Helper()
	c, err := b.Dial(brokertest.Opts{V5: true, User: user, Password: "pw-" + user, ClientID: clientID})
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(c.Close)
	if code, err := c.Subscribe("im/u/"+user+"/#", 1); err != nil || code != 1 {
		t.Fatalf("subscribe %s: 0x%02x %v", clientID, code, err)
	}
	return c
}

// reuseReq sends a request and returns its response, failing on an error.
func reuseReq(t *testing.T, c *brokertest.Client, user, payload string) json.RawMessage {
	t.Helper()
	if _, err := c.Publish("im/req", 1, []byte(payload)); err != nil {
		t.Fatalf("request %s: %v", payload, err)
	}
	r := reuseNext(t, c, "im/u/"+user+"/res")
	if !r.OK {
		t.Fatalf("request %s failed", payload)
	}
	return r.Data
}

// reuseSend publishes a message with id and returns the copy the sender's
// own device gets back, which carries its seq.
func reuseSend(t *testing.T, c *brokertest.Client, user, topic, ownTopic, id string) reuseMsg {
	t.Helper()
	if code, err := c.Publish(topic, 1, []byte(`{"id":"`+id+`","body":"x"}`)); err != nil || code != 0 {
		t.Fatalf("%s sends %s: 0x%02x %v", user, id, code, err)
	}
	m := reuseNext(t, c, ownTopic)
	if m.ID != id || m.From != user {
		t.Fatalf("%s's own copy: %+v; want %s", user, m, id)
	}
	return m
}

func reuseHistory(t *testing.T, c *brokertest.Client, user, conv string) []string {
	t.Helper()
	var d struct {
		Messages []reuseMsg `json:"messages"`
	}
	if err := json.Unmarshal(reuseReq(t, c, user, `{"rid":"h","op":"history","conv":"`+conv+`"}`), &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range d.Messages {
		out = append(out, fmt.Sprintf("%d:%s/%s", m.Seq, m.From, m.ID))
	}
	return out
}

// A user removed through the admin API and created again under the same id
// is a new user (PROTOCOL.md sections 3 and 7): the message ids it sends are
// new messages, stored and delivered, also ids the removed user had sent;
// it reads nothing of the DM from before, while the peer keeps it all; and
// its stream starts empty, so its devices get only what is new.
func TestRecreatedUserEndToEnd(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.AddUser("root", "pw-root", imqtt.RoleOperator)
	b.Users("alice", "bob")
	b.MakeFriends(t, "alice", "bob")
	alice := reuseDevice(t, b, "alice", "alice-dev")
	bob := reuseDevice(t, b, "bob", "bob-dev")
	conv := imqtt.DMConv("alice", "bob")
	reuseReq(t, bob, "bob", `{"rid":"g","op":"group.create","group":"team","members":["alice"]}`)
	for _, id := range []string{"c-1", "c-2", "c-3"} {
		m := reuseSend(t, alice, "alice", "im/dm/bob", "im/u/alice/dm/bob", id)
		if got := reuseNext(t, bob, "im/u/bob/dm/alice"); got.ID != id || got.Seq != m.Seq {
			t.Fatalf("bob got %+v; want %s at seq %d", got, id, m.Seq)
		}
	}
	reuseSend(t, alice, "alice", "im/g/team", "im/u/alice/g/team", "m-1")
	reuseNext(t, bob, "im/u/bob/g/team")
	// The device's cursor, saved while it is online, is well past where
	// the new alice's stream begins; the client id bound again below must
	// not inherit it (the broker once kept it in memory and skipped the
	// new owner's first entries).
	head, err := b.Store().StreamHead("alice")
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "alice's cursor saved", func() bool {
		cur, err := b.Store().Cursor("alice-dev")
		return err == nil && cur == head
	})

	reuseAdmin(t, b, "DELETE", "/v1/users/alice", "", http.StatusNoContent)
	select {
	case <-alice.Gone():
	case <-time.After(brokertest.Timeout):
		t.Fatal("removed alice's device is still connected")
	}
	reuseAdmin(t, b, "POST", "/v1/users", `{"user":"alice","password":"pw-alice"}`, http.StatusCreated)
	if head, err := b.Store().StreamHead("alice"); err != nil || head != 0 {
		t.Fatalf("new alice's stream head %d, %v; want an empty stream", head, err)
	}
	alice = reuseDevice(t, b, "alice", "alice-dev")
	if got := reuseHistory(t, alice, "alice", string(conv)); len(got) != 0 {
		t.Fatalf("new alice reads the old DM: %v", got)
	}
	reuseReq(t, alice, "alice", `{"rid":"f","op":"friend.request","user":"bob"}`)
	reuseReq(t, bob, "bob", `{"rid":"f","op":"friend.accept","user":"alice"}`)
	reuseReq(t, bob, "bob", `{"rid":"a","op":"group.add","group":"team","users":["alice"]}`)

	m := reuseSend(t, alice, "alice", "im/dm/bob", "im/u/alice/dm/bob", "c-1")
	if m.Seq != 4 || m.Conv != string(conv) {
		t.Fatalf("new alice's c-1: %+v; want a new message, seq 4", m)
	}
	if got := reuseNext(t, bob, "im/u/bob/dm/alice"); got.ID != "c-1" || got.Seq != 4 {
		t.Fatalf("bob got %+v; want new alice's c-1 at seq 4", got)
	}
	if g := reuseSend(t, alice, "alice", "im/g/team", "im/u/alice/g/team", "m-1"); g.Seq != 2 {
		t.Fatalf("new alice's m-1 in the group: %+v; want a new message, seq 2", g)
	}
	if got := reuseNext(t, bob, "im/u/bob/g/team"); got.ID != "m-1" || got.Seq != 2 {
		t.Fatalf("bob got %+v in the group; want new alice's m-1 at seq 2", got)
	}
	reuseSend(t, bob, "bob", "im/dm/alice", "im/u/bob/dm/alice", "b-1")
	if got := reuseNext(t, alice, "im/u/alice/dm/bob"); got.ID != "b-1" || got.Seq != 5 {
		t.Fatalf("new alice got %+v; want bob's b-1 at seq 5", got)
	}

	if got, want := reuseHistory(t, alice, "alice", string(conv)), []string{"4:alice/c-1", "5:bob/b-1"}; !slices.Equal(got, want) {
		t.Fatalf("new alice's history: %v; want %v", got, want)
	}
	if got, want := reuseHistory(t, alice, "alice", "g:team"), []string{"2:alice/m-1"}; !slices.Equal(got, want) {
		t.Fatalf("new alice's group history: %v; want %v", got, want)
	}
	want := []string{"1:alice/c-1", "2:alice/c-2", "3:alice/c-3", "4:alice/c-1", "5:bob/b-1"}
	if got := reuseHistory(t, bob, "bob", string(conv)); !slices.Equal(got, want) {
		t.Fatalf("bob's history: %v; want %v", got, want)
	}
	var list struct {
		Convs []struct {
			Conv    string `json:"conv"`
			LastSeq uint64 `json:"last_seq"`
			ReadSeq uint64 `json:"read_seq"`
			Unread  uint64 `json:"unread"`
		} `json:"convs"`
	}
	if err := json.Unmarshal(reuseReq(t, alice, "alice", `{"rid":"l","op":"conv.list"}`), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string][3]uint64{}
	for _, c := range list.Convs {
		got[c.Conv] = [3]uint64{c.LastSeq, c.ReadSeq, c.Unread}
	}
	if len(got) != 2 || got[string(conv)] != [3]uint64{5, 4, 1} || got["g:team"] != [3]uint64{2, 2, 0} {
		t.Fatalf("new alice's conv.list: %+v; want %s last 5 read 4 unread 1, g:team last 2 read 2", list.Convs, conv)
	}
}
