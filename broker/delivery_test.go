package broker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// dlvConfig lifts per-user limits: these tests send thousands of messages
// from one user over many connections as fast as the broker acknowledges
// them, which is about delivery, not about limits.
func dlvConfig(c *broker.Config) {
	c.Limits.MessagesPerSecond = 1e6
	// dlvFlood's connections come and go faster than the broker may notice.
	c.Limits.ConnectionsPerUser = 100
}

// dlvFields are the fields of a delivered message, PROTOCOL.md section 4:
// exactly these, no more.
var dlvFields = []string{"body", "conv", "from", "id", "seq", "ts", "type"}

// dlvMsg is a message as a device received it.
type dlvMsg struct {
	Conv string          `json:"conv"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	From string          `json:"from"`
	TS   int64           `json:"ts"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
	raw  []byte
}

// dlvDecode decodes a delivered message, failing the test unless it has
// exactly the fields of section 4 with their JSON types.
func dlvDecode(t testing.TB, payload []byte) dlvMsg {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		t.Fatalf("delivered message is not a JSON object: %v: %s", err, payload)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, dlvFields) {
		t.Fatalf("delivered message has fields %v, want %v: %s", keys, dlvFields, payload)
	}
	for _, k := range []string{"conv", "id", "from", "type"} {
		if fields[k][0] != '"' {
			t.Fatalf("field %s is not a string: %s", k, payload)
		}
	}
	var m dlvMsg
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("delivered message: %v: %s", err, payload)
	}
	m.raw = payload
	return m
}

// dlvSameJSON reports whether a and b are the same JSON value.
func dlvSameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// dlvInbox is the filter a device of user subscribes to.
func dlvInbox(user string) string { return "im/u/" + user + "/#" }

// dlvTopic is where user's devices get the DM with peer.
func dlvTopic(user, peer string) string { return "im/u/" + user + "/dm/" + peer }

// dlvSubscribe subscribes c to user's inbox at QoS 1.
func dlvSubscribe(t testing.TB, c *brokertest.Client, user string) {
	t.Helper()
	code, err := c.Subscribe(dlvInbox(user), 1)
	if err != nil || code != 1 {
		t.Fatalf("%s: subscribe %s: code 0x%02x, %v", c.ID, dlvInbox(user), code, err)
	}
}

// dlvDial connects a device of user (password "pw-"+user) and closes it when
// the test ends. It does not subscribe.
func dlvDial(t testing.TB, b *brokertest.B, user, clientID string, v5, persistent bool) *brokertest.Client {
	t.Helper()
	c, err := b.Dial(brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: clientID, Persistent: persistent})
	if err != nil {
		t.Fatalf("connect %s as %s: %v", clientID, user, err)
	}
	t.Cleanup(c.Close)
	return c
}

// dlvDevice is dlvDial, then a subscription to the user's inbox.
func dlvDevice(t testing.TB, b *brokertest.B, user, clientID string, v5, persistent bool) *brokertest.Client {
	t.Helper()
	c := dlvDial(t, b, user, clientID, v5, persistent)
	dlvSubscribe(t, c, user)
	return c
}

// dlvSend publishes a DM at QoS 1 and fails the test unless it is
// acknowledged as a success.
func dlvSend(t testing.TB, c *brokertest.Client, peer, payload string) {
	t.Helper()
	code, err := c.Publish("im/dm/"+peer, 1, []byte(payload))
	if err != nil || code != 0 {
		t.Fatalf("%s: DM to %s: ack code 0x%02x, %v", c.ID, peer, code, err)
	}
}

// dlvNext returns the next DM c receives on topic, decoded.
func dlvNext(t testing.TB, c *brokertest.Client, topic string) dlvMsg {
	t.Helper()
	return dlvDecode(t, c.NextOn(t, topic).Payload)
}

// dlvUntil returns the DMs c receives on topic up to and including the one
// with id last. Messages of one conversation come in seq order, so a
// duplicate of anything before last would show up in the result.
func dlvUntil(t testing.TB, c *brokertest.Client, topic, last string) []dlvMsg {
	t.Helper()
	var got []dlvMsg
	for {
		m := dlvNext(t, c, topic)
		got = append(got, m)
		if m.ID == last {
			return got
		}
	}
}

// dlvOffline disconnects c. Nothing needs to wait for the broker to notice:
// a delivery that still reaches the closed client is never acknowledged,
// so it stays in the device's backlog.
func dlvOffline(t testing.TB, c *brokertest.Client) {
	t.Helper()
	c.Close()
}

// dlvBlock makes a block b in the store.
func dlvBlock(br *brokertest.B, a, b string) error {
	return br.Store().Update(func(tx storage.Tx) error { return tx.SetBlock(a, b, time.Now().UnixMilli(), true) })
}

// dlvStreamHead returns the position of the last entry of user's delivery
// stream.
func dlvStreamHead(t testing.TB, b *brokertest.B, user string) uint64 {
	t.Helper()
	head, err := b.Store().StreamHead(user)
	if err != nil {
		t.Fatalf("stream head of %s: %v", user, err)
	}
	return head
}

// dlvFloodConns is how many connections dlvFlood sends over at once, so that
// their messages share commits as concurrent senders' do.
const dlvFloodConns = 8

// dlvFlood sends n DMs from user to peer, with ids prefix+"1".."n" and bodies
// {"n": i}, over floodConns raw MQTT 3.1.1 connections at once (client ids
// user+"-flood-k"), each pipelining its share in windows. It fails the test
// unless every one is acknowledged. Connection k sends the i with
// i%floodConns == k, in increasing order, so only their relative order is
// fixed: see dlvCheckFlood.
func dlvFlood(t testing.TB, b *brokertest.B, user, peer, prefix string, n int) {
	t.Helper()
	errs := make(chan error, dlvFloodConns)
	for k := range dlvFloodConns {
		go func() {
			var mine []int
			for i := 1; i <= n; i++ {
				if i%dlvFloodConns == k {
					mine = append(mine, i)
				}
			}
			errs <- dlvFloodConn(b.Addr("mqtt"), fmt.Sprintf("%s-flood-%d", user, k), user, peer, prefix, mine)
		}()
	}
	for range dlvFloodConns {
		if err := <-errs; err != nil {
			t.Fatalf("flood: %v", err)
		}
	}
}

// dlvFloodConn sends the messages numbered ns over one connection. It reports
// errors instead of failing the test, since it runs on its own goroutine.
func dlvFloodConn(addr, clientID, user, peer, prefix string, ns []int) error {
	conn, err := net.DialTimeout("tcp", addr, brokertest.Timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(4 * brokertest.Timeout))
	br := bufio.NewReader(conn)
	write := func(pk packets.Packet) error {
		pk.ProtocolVersion = 4
		var buf bytes.Buffer
		var err error
		switch pk.FixedHeader.Type {
		case packets.Connect:
			err = pk.ConnectEncode(&buf)
		case packets.Publish:
			err = pk.PublishEncode(&buf)
		default:
			err = pk.DisconnectEncode(&buf)
		}
		if err != nil {
			return err
		}
		_, err = conn.Write(buf.Bytes())
		return err
	}
	// read returns the next packet's type and its packet id (or, for a
	// CONNACK, its return code).
	read := func() (byte, uint16, error) {
		hb, err := br.ReadByte()
		if err != nil {
			return 0, 0, err
		}
		n, _, err := packets.DecodeLength(br)
		if err != nil {
			return 0, 0, err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return 0, 0, err
		}
		if len(body) < 2 {
			return hb >> 4, 0, fmt.Errorf("packet type %d: short body", hb>>4)
		}
		return hb >> 4, uint16(body[0])<<8 | uint16(body[1]), nil
	}
	if err := write(brokertest.ConnectPacket(brokertest.Opts{ClientID: clientID, User: user, Password: "pw-" + user, Keepalive: 60})); err != nil {
		return err
	}
	if typ, v, err := read(); err != nil || typ != packets.Connack || v&0xff != 0 {
		return fmt.Errorf("%s: CONNACK type %d code %d: %v", clientID, typ, v&0xff, err)
	}
	const window = 32
	for start := 0; start < len(ns); start += window {
		batch := ns[start:min(start+window, len(ns))]
		for j, i := range batch {
			err := write(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName:   "im/dm/" + peer,
				PacketID:    uint16(j + 1),
				Payload:     fmt.Appendf(nil, `{"id":"%s%d","body":{"n":%d}}`, prefix, i, i),
			})
			if err != nil {
				return err
			}
		}
		for j := range batch {
			typ, pid, err := read()
			if err != nil || typ != packets.Puback || pid != uint16(j+1) {
				return fmt.Errorf("%s: waiting for PUBACK %d: got type %d id %d: %v", clientID, j+1, typ, pid, err)
			}
		}
	}
	return write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
}

// dlvCheckFlood fails the test unless msgs hold each message of a flood with
// prefix and n exactly once, and those of each flood connection in the
// order it sent them.
func dlvCheckFlood(t testing.TB, who string, msgs []dlvMsg, prefix string, n int) {
	t.Helper()
	seen := map[int]bool{}
	last := make([]int, dlvFloodConns)
	for _, m := range msgs {
		var i int
		if _, err := fmt.Sscanf(m.ID, prefix+"%d", &i); err != nil || i < 1 || i > n {
			continue
		}
		if seen[i] {
			t.Fatalf("%s: %s twice", who, m.ID)
		}
		seen[i] = true
		if k := i % dlvFloodConns; i < last[k] {
			t.Fatalf("%s: %s%d after %s%d, which was sent after it", who, prefix, i, prefix, last[k])
		} else {
			last[k] = i
		}
	}
	if len(seen) != n {
		t.Fatalf("%s: %d of the %d messages %s1..%s%d", who, len(seen), n, prefix, prefix, n)
	}
}

// dlvCheckRun fails the test unless msgs are the messages of conv with seqs
// from..from+len(msgs)-1 in order, each exactly once.
func dlvCheckRun(t testing.TB, who string, msgs []dlvMsg, conv string, from uint64) {
	t.Helper()
	for i, m := range msgs {
		if m.Conv != conv || m.Seq != from+uint64(i) {
			t.Fatalf("%s: message %d of %d is %s/%d, want %s/%d (in order, none missing, none twice)",
				who, i+1, len(msgs), m.Conv, m.Seq, conv, from+uint64(i))
		}
	}
}

func TestDMRoundTrip(t *testing.T) {
	bodies := []struct {
		name, payload, id, typ, body string
	}{
		{"string", `{"id":"m-1","body":"hello"}`, "m-1", "text", `"hello"`},
		{"object and type", `{"id":"m-2", "type":"image", "body":{"url":"https://x/y.png","size":[640, 480]}}`, "m-2", "image", `{"url":"https://x/y.png","size":[640,480]}`},
		{"number, no id", `{"body":42}`, "", "text", `42`},
		{"array, unknown field", `{"id":"m-4","body":[true,"é",null],"extra":1,"from":"mallory"}`, "m-4", "text", `[true,"é",null]`},
	}
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			phone := dlvDevice(t, b, "alice", "alice-phone", v5, false)
			laptop := dlvDevice(t, b, "alice", "alice-laptop", v5, false)
			bob := dlvDevice(t, b, "bob", "bob-dev", v5, false)

			for i, tc := range bodies {
				before := time.Now().UnixMilli()
				dlvSend(t, phone, "bob", tc.payload)
				after := time.Now().UnixMilli()
				got := dlvNext(t, bob, dlvTopic("bob", "alice"))
				if got.Conv != "dm:alice:bob" || got.Seq != uint64(i+1) || got.From != "alice" || got.Type != tc.typ {
					t.Fatalf("%s: got conv %q seq %d from %q type %q, want dm:alice:bob %d alice %q: %s",
						tc.name, got.Conv, got.Seq, got.From, got.Type, i+1, tc.typ, got.raw)
				}
				if tc.id != "" && got.ID != tc.id {
					t.Errorf("%s: id %q, want %q", tc.name, got.ID, tc.id)
				}
				if tc.id == "" && got.ID == "" {
					t.Errorf("%s: no id assigned: %s", tc.name, got.raw)
				}
				if got.TS < before || got.TS > after {
					t.Errorf("%s: ts %d outside the send, [%d, %d]", tc.name, got.TS, before, after)
				}
				if !dlvSameJSON(t, got.Body, []byte(tc.body)) {
					t.Errorf("%s: body %s, want %s", tc.name, got.Body, tc.body)
				}
				// The sender's devices, the sending one included, get the
				// very same stored message: it is their confirmation.
				for _, c := range []*brokertest.Client{phone, laptop} {
					echo := c.NextOn(t, dlvTopic("alice", "bob"))
					if !bytes.Equal(echo.Payload, got.raw) {
						t.Errorf("%s: %s got %s, bob got %s", tc.name, c.ID, echo.Payload, got.raw)
					}
				}
			}

			// The conversation id is the same from the other side: the ids
			// in byte order, not sender first.
			dlvSend(t, bob, "alice", `{"id":"r-1","body":"hi back"}`)
			got := dlvNext(t, phone, dlvTopic("alice", "bob"))
			if got.Conv != "dm:alice:bob" || got.Seq != uint64(len(bodies)+1) || got.From != "bob" || got.ID != "r-1" {
				t.Errorf("reply: %s", got.raw)
			}
			if echo := dlvNext(t, bob, dlvTopic("bob", "alice")); echo.Seq != got.Seq || echo.From != "bob" {
				t.Errorf("reply echo: %s", echo.raw)
			}
			if l := dlvNext(t, laptop, dlvTopic("alice", "bob")); l.Seq != got.Seq {
				t.Errorf("reply on the laptop: %s", l.raw)
			}
		})
	}
}

func TestDMIdempotentRetry(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			a := dlvDevice(t, b, "alice", "alice-dev", v5, false)
			bob := dlvDevice(t, b, "bob", "bob-dev", v5, false)

			dlvSend(t, a, "bob", `{"id":"dup","body":"first"}`)
			// The retry is acknowledged as a success (dlvSend checks it) even
			// with another body: the first one stands.
			dlvSend(t, a, "bob", `{"id":"dup","body":"first"}`)
			dlvSend(t, a, "bob", `{"id":"dup","body":"changed"}`)
			// Ids are per sender: bob may use the same one.
			dlvSend(t, bob, "alice", `{"id":"dup","body":"bob's"}`)
			dlvSend(t, a, "bob", `{"id":"end","body":"last"}`)

			for _, c := range []struct {
				cl    *brokertest.Client
				topic string
			}{{bob, dlvTopic("bob", "alice")}, {a, dlvTopic("alice", "bob")}} {
				got := dlvUntil(t, c.cl, c.topic, "end")
				if len(got) != 3 {
					t.Fatalf("%s got %d messages, want 3: %v", c.cl.ID, len(got), dlvRaws(got))
				}
				dlvCheckRun(t, c.cl.ID, got, "dm:alice:bob", 1)
				if got[0].ID != "dup" || got[0].From != "alice" || !dlvSameJSON(t, got[0].Body, []byte(`"first"`)) {
					t.Errorf("%s: first message %s", c.cl.ID, got[0].raw)
				}
				if got[1].ID != "dup" || got[1].From != "bob" {
					t.Errorf("%s: second message %s", c.cl.ID, got[1].raw)
				}
			}
		})
	}
}

func TestDMRefused(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob", "carol")
			b.MakeFriends(t, "alice", "carol")
			a := dlvDevice(t, b, "alice", "alice-dev", v5, false)
			bob := dlvDevice(t, b, "bob", "bob-dev", v5, false)
			carol := dlvDevice(t, b, "carol", "carol-dev", v5, false)

			code, err := a.Publish("im/dm/bob", 1, []byte(`{"id":"nf","body":"hi"}`))
			if err != nil {
				t.Fatalf("not friends: publish not acknowledged: %v", err)
			}
			if v5 && code != 0x87 {
				t.Errorf("not friends: reason 0x%02x, want 0x87", code)
			}
			res := a.NextOn(t, "im/u/alice/res")
			var r struct {
				ID    string `json:"id"`
				OK    bool   `json:"ok"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(res.Payload, &r); err != nil || r.OK || r.ID != "nf" || r.Error.Code != "not_friends" {
				t.Errorf("not friends: response %s", res.Payload)
			}

			// Carol blocks alice: alice's DM is refused although they are
			// friends.
			if err := dlvBlock(b, "carol", "alice"); err != nil {
				t.Fatal(err)
			}
			code, err = a.Publish("im/dm/carol", 1, []byte(`{"id":"bl","body":"hi"}`))
			if err != nil {
				t.Fatalf("blocked: publish not acknowledged: %v", err)
			}
			if v5 && code != 0x87 {
				t.Errorf("blocked: reason 0x%02x, want 0x87", code)
			}
			res = a.NextOn(t, "im/u/alice/res")
			if err := json.Unmarshal(res.Payload, &r); err != nil || r.OK || r.ID != "bl" || r.Error.Code != "not_allowed" {
				t.Errorf("blocked: response %s", res.Payload)
			}

			// Nothing was stored: once allowed, the first accepted message
			// of each conversation is seq 1, and it is the first thing
			// carol and bob get.
			if err := b.Store().Update(func(tx storage.Tx) error { return tx.SetBlock("carol", "alice", 0, false) }); err != nil {
				t.Fatal(err)
			}
			dlvSend(t, carol, "alice", `{"id":"ok","body":"from carol"}`)
			if m := dlvNext(t, carol, dlvTopic("carol", "alice")); m.ID != "ok" || m.Seq != 1 {
				t.Errorf("carol got %s, want her own message with seq 1", m.raw)
			}
			b.MakeFriends(t, "alice", "bob")
			dlvSend(t, a, "bob", `{"id":"ok","body":"now friends"}`)
			if m := dlvNext(t, bob, dlvTopic("bob", "alice")); m.ID != "ok" || m.Seq != 1 {
				t.Errorf("bob got %s, want the accepted message with seq 1", m.raw)
			}
		})
	}
}

func TestOfflineDeviceGetsBacklogInOrder(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name           string
		v5, persistent bool
	}{
		{"3.1.1 clean session", false, false},
		{"3.1.1 persistent session", false, true},
		{"5.0 clean start", true, false},
		{"5.0 session expiry", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Most of the time goes to waiting for fsync: the cases
			// overlap well.
			t.Parallel()
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			a := dlvDial(t, b, "alice", "alice-dev", false, false)
			// The device connects once, so the broker knows it, then goes
			// away.
			first := dlvDevice(t, b, "bob", "bob-phone", tc.v5, tc.persistent)
			dlvOffline(t, first)

			dlvFlood(t, b, "alice", "bob", "b", n)

			bob := dlvDial(t, b, "bob", "bob-phone", tc.v5, tc.persistent)
			if !tc.persistent {
				dlvSubscribe(t, bob, "bob")
			}
			// A persistent session resumes its subscription: delivery
			// starts without a new SUBSCRIBE. Either way, a message sent
			// now comes after the whole backlog.
			dlvSend(t, a, "bob", `{"id":"newer","body":"after the backlog"}`)
			got := dlvUntil(t, bob, dlvTopic("bob", "alice"), "newer")
			if len(got) != n+1 {
				t.Fatalf("got %d messages, want the %d missed ones then the newer one", len(got), n)
			}
			dlvCheckRun(t, "bob-phone", got, "dm:alice:bob", 1)
			dlvCheckFlood(t, "bob-phone", got[:n], "b", n)

			// A device never seen before starts at "now": none of the old
			// backlog, only what is sent after it connected.
			fresh := dlvDevice(t, b, "bob", "bob-new-tablet", tc.v5, tc.persistent)
			dlvSend(t, a, "bob", `{"id":"fresh","body":"for everyone"}`)
			if m := dlvNext(t, fresh, dlvTopic("bob", "alice")); m.ID != "fresh" || m.Seq != n+2 {
				t.Errorf("new device's first message: %s, want id fresh, seq %d", m.raw, n+2)
			}
			if m := dlvNext(t, bob, dlvTopic("bob", "alice")); m.ID != "fresh" {
				t.Errorf("bob-phone after its backlog: %s", m.raw)
			}
		})
	}
}

func TestMultiDeviceEachGetsEverythingOnce(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			t.Parallel()
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			a := dlvDial(t, b, "alice", "alice-dev", false, false)
			phone := dlvDevice(t, b, "bob", "bob-phone", v5, false)
			tablet := dlvDevice(t, b, "bob", "bob-tablet", v5, false)
			dlvOffline(t, tablet)

			dlvFlood(t, b, "alice", "bob", "x", 300)
			tablet = dlvDevice(t, b, "bob", "bob-tablet", v5, false)
			// More while the tablet drains its backlog and the phone is
			// live.
			dlvFlood(t, b, "alice", "bob", "y", 200)
			dlvSend(t, a, "bob", `{"id":"end","body":"last"}`)

			for _, c := range []*brokertest.Client{phone, tablet} {
				got := dlvUntil(t, c, dlvTopic("bob", "alice"), "end")
				seen := map[uint64]int{}
				dups := 0
				for _, m := range got {
					seen[m.Seq]++
					if seen[m.Seq] == 2 {
						dups++
					}
				}
				if dups > 0 || len(seen) != 501 {
					t.Errorf("%s: %d messages, %d distinct, %d duplicated; want 501 each once", c.ID, len(got), len(seen), dups)
				}
				dlvCheckRun(t, c.ID, got, "dm:alice:bob", 1)
				dlvCheckFlood(t, c.ID, got, "x", 300)
				dlvCheckFlood(t, c.ID, got, "y", 200)
			}
		})
	}
}

// dlvRawDevice is a device driven packet by packet, which acknowledges only
// what the test tells it to.
type dlvRawDevice struct {
	*brokertest.Raw
	user string
	// got are the deliveries read so far, with their packet ids.
	got  []dlvMsg
	pids []uint16
	// acked are the packet ids of PUBACKs the broker sent.
	acked map[uint16]bool
	pongs int
}

func dlvDialRaw(t testing.TB, b *brokertest.B, user, clientID string, v5 bool) *dlvRawDevice {
	t.Helper()
	r := b.Raw(t, v5)
	ack := r.Connect(brokertest.Opts{ClientID: clientID, User: user, Password: "pw-" + user, Keepalive: 60})
	if ack.ReasonCode != 0 {
		t.Fatalf("raw connect %s: code 0x%02x", clientID, ack.ReasonCode)
	}
	d := &dlvRawDevice{Raw: r, user: user, acked: map[uint16]bool{}}
	d.Send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: dlvInbox(user), Qos: 1}},
	})
	// Deliveries may start right after the SUBACK, never before it.
	sa := d.Expect(packets.Suback)
	if len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
		t.Fatalf("raw subscribe: %v", sa.ReasonCodes)
	}
	return d
}

// publish sends a DM with a given packet id; the PUBACK is read later.
func (d *dlvRawDevice) publish(peer string, pid uint16, payload string) {
	d.Send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "im/dm/" + peer,
		PacketID:    pid,
		Payload:     []byte(payload),
	})
}

// read reads packets until cond holds, recording deliveries and PUBACKs.
func (d *dlvRawDevice) read(t testing.TB, cond func() bool) {
	t.Helper()
	for !cond() {
		pk, err := d.Read()
		if err != nil {
			t.Fatalf("raw read: %v (have %d deliveries)", err, len(d.got))
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			// Transient events (presence, typing) come at QoS 0 and are
			// not what these tests count.
			if !strings.Contains(pk.TopicName, "/dm/") {
				continue
			}
			if pk.FixedHeader.Qos != 1 {
				t.Fatalf("message delivered at QoS %d, want 1", pk.FixedHeader.Qos)
			}
			d.got = append(d.got, dlvDecode(t, pk.Payload))
			d.pids = append(d.pids, pk.PacketID)
		case packets.Puback:
			d.acked[pk.PacketID] = true
		case packets.Pingresp:
			d.pongs++
		}
	}
}

// sync sends PINGREQ and reads until the PINGRESP: the broker handles a
// connection's packets in order, so it has handled everything sent before.
func (d *dlvRawDevice) sync(t testing.TB) {
	t.Helper()
	d.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	want := d.pongs + 1
	d.read(t, func() bool { return d.pongs == want })
}

// ackAll acknowledges every delivery read so far.
func (d *dlvRawDevice) ackAll() {
	for _, pid := range d.pids {
		d.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pid})
	}
}

func TestRedeliveryAfterLostAck(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")
			a := dlvDial(t, b, "alice", "alice-dev", false, false)

			// First connection: bob's device reads five messages and never
			// acknowledges them.
			d := dlvDialRaw(t, b, "bob", "bob-raw", v5)
			for i := 1; i <= 5; i++ {
				dlvSend(t, a, "bob", fmt.Sprintf(`{"id":"m%d","body":%d}`, i, i))
			}
			d.read(t, func() bool { return len(d.got) == 5 })
			dlvCheckRun(t, "first connection", d.got, "dm:alice:bob", 1)
			first := d.got
			d.Close()

			// Second connection: the same five again, same conv and seq
			// and content, acknowledged this time.
			d = dlvDialRaw(t, b, "bob", "bob-raw", v5)
			d.read(t, func() bool { return len(d.got) == 5 })
			for i, m := range d.got {
				if !bytes.Equal(m.raw, first[i].raw) {
					t.Fatalf("redelivery %d: %s, first delivery was %s", i+1, m.raw, first[i].raw)
				}
			}
			d.ackAll()
			// The PUBACKs reach the store's cursor at the next flush.
			head := dlvStreamHead(t, b, "bob")
			brokertest.Eventually(t, "bob-raw's cursor at the stream head", func() bool {
				c, err := b.Store().Cursor("bob-raw")
				return err == nil && c == head
			})
			d.Close()

			// Third connection: nothing old comes again; the next
			// message is the first thing delivered.
			d = dlvDialRaw(t, b, "bob", "bob-raw", v5)
			dlvSend(t, a, "bob", `{"id":"m6","body":6}`)
			d.read(t, func() bool { return len(d.got) == 1 })
			if d.got[0].ID != "m6" || d.got[0].Seq != 6 {
				t.Errorf("after acknowledging, got %s, want m6 with seq 6", d.got[0].raw)
			}
		})
	}
}

// TestEchoNotAckedBySendersOwnPublish: MQTT packet ids are per direction,
// so a device may publish with the very packet id of a delivery it has not
// acknowledged yet. Its publish must not count as the acknowledgement of
// that delivery: unacknowledged, the delivery comes again on the next
// connection.
func TestEchoNotAckedBySendersOwnPublish(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, dlvConfig)
			b.Users("alice", "bob")
			b.MakeFriends(t, "alice", "bob")

			d := dlvDialRaw(t, b, "alice", "alice-raw", v5)
			d.publish("bob", 100, `{"id":"m1","body":1}`)
			d.read(t, func() bool { return len(d.got) == 1 && d.acked[100] })
			echo := d.pids[0]
			// The next message reuses the echo's packet id, which is
			// legal: the echo is the broker's packet, this one alice's.
			if echo == 100 {
				t.Fatalf("echo has the id of the publish; pick another")
			}
			d.publish("bob", echo, `{"id":"m2","body":2}`)
			d.read(t, func() bool { return len(d.got) == 2 && d.acked[echo] })
			// Neither echo was acknowledged.
			d.Close()

			d = dlvDialRaw(t, b, "alice", "alice-raw", v5)
			d.read(t, func() bool { return len(d.got) >= 1 })
			if d.got[0].ID != "m1" || d.got[0].Seq != 1 {
				t.Fatalf("the echo of m1, never acknowledged, is not delivered again: alice's publish with packet id %d "+
					"was taken as its PUBACK. First delivery on reconnect: %s", echo, d.got[0].raw)
			}
			d.read(t, func() bool { return len(d.got) >= 2 })
			dlvCheckRun(t, "alice-raw", d.got, "dm:alice:bob", 1)
		})
	}
}

func dlvProto(v5 bool) string {
	if v5 {
		return "5.0"
	}
	return "3.1.1"
}

func dlvRaws(ms []dlvMsg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.raw)
	}
	return out
}

// BenchmarkOfflineDrain measures how fast a device that was away receives
// its backlog: b.N messages stored while it was offline (written straight
// to the store as SendDM writes them), then one connection that reads them
// all, acknowledging each (paho 3.1.1).
//
//	go test -run '^$' -bench BenchmarkOfflineDrain -benchtime 20000x ./broker/
func BenchmarkOfflineDrain(b *testing.B) {
	br := brokertest.Start(b, func(c *broker.Config) {
		dlvConfig(c)
		c.Backlog.MaxEntries = max(c.Backlog.MaxEntries, b.N)
	})
	br.Users("alice", "bob")
	br.MakeFriends(b, "alice", "bob")
	first := dlvDevice(b, br, "bob", "bob-dev", false, false)
	first.Close()
	conv := imqtt.DMConv("alice", "bob")
	for done := 0; done < b.N; {
		n := min(1000, b.N-done)
		err := br.Store().Update(func(tx storage.Tx) error {
			for i := range n {
				ts := time.Now().UnixMilli()
				m := imqtt.Message{Conv: conv, ID: fmt.Sprintf("m%d", done+i), From: "alice", TS: ts, Type: "text", Body: []byte(`"a message of ordinary length, some sixty bytes of text"`)}
				seq, err := tx.AppendMessage(conv, "alice", m.ID, ts, func(seq uint64) []byte { m.Seq = seq; return m.Encode() })
				if err != nil {
					return err
				}
				for _, u := range []string{"alice", "bob"} {
					if _, err := tx.AppendMessageRef(u, ts, conv, seq); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.ResetTimer()
	bob := dlvDevice(b, br, "bob", "bob-dev", false, false)
	topic := dlvTopic("bob", "alice")
	for got := 0; got < b.N; {
		if m := bob.Next(b); m.Topic == topic {
			got++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkDMEndToEnd measures durable DM throughput through the broker:
// pairs of a sender and a receiver (paho 3.1.1), each sender publishing its
// share of b.N messages at QoS 1 one after the other (each waits for its
// PUBACK, so for its commit), until every receiver has its share.
//
//	go test -run '^$' -bench BenchmarkDMEndToEnd -benchtime 20000x ./broker/
func BenchmarkDMEndToEnd(b *testing.B) {
	for _, pairs := range []int{1, 100} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			br := brokertest.Start(b, dlvConfig)
			senders := make([]*brokertest.Client, pairs)
			receivers := make([]*brokertest.Client, pairs)
			for i := range pairs {
				s, r := fmt.Sprintf("s%03d", i), fmt.Sprintf("r%03d", i)
				br.Users(s, r)
				br.MakeFriends(b, s, r)
				// The sender does not dlvSubscribe: only the receiver's
				// copies are counted.
				senders[i] = dlvDial(b, br, s, s+"-dev", false, false)
				receivers[i] = dlvDevice(b, br, r, r+"-dev", false, false)
			}
			share := func(i int) int { return b.N/pairs + dlvBtoi(i < b.N%pairs) }
			b.ResetTimer()
			errs := make(chan error, pairs)
			for i := range pairs {
				go func() {
					peer := fmt.Sprintf("r%03d", i)
					for j := range share(i) {
						if _, err := senders[i].Publish("im/dm/"+peer, 1, fmt.Appendf(nil, `{"id":"m%d","body":"a message of ordinary length, some sixty bytes of text"}`, j)); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for i := range pairs {
				topic := dlvTopic(fmt.Sprintf("r%03d", i), fmt.Sprintf("s%03d", i))
				for got := 0; got < share(i); {
					if m := receivers[i].Next(b); m.Topic == topic {
						got++
					}
				}
			}
			for range pairs {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

func dlvBtoi(v bool) int {
	if v {
		return 1
	}
	return 0
}
