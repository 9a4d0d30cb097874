package broker_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

var update = flag.Bool("update", false, "rewrite the .golden files of ../testdata/requests from a real broker's answers")

// chainRequestDir holds golden request payloads (see request_test.go in the
// root package, which checks the decoder against the same files).
const chainRequestDir = "../testdata/requests"

// chainExpectedRid is the rid a response must echo: the "rid" member of a
// JSON object when it is a string of 1-64 characters, else none.
func chainExpectedRid(payload []byte) string {
	var m map[string]any
	if json.Unmarshal(payload, &m) != nil {
		return ""
	}
	rid, _ := m["rid"].(string)
	if n := utf8.RuneCountInString(rid); n < 1 || n > 64 {
		return ""
	}
	return rid
}

var chainGoldenUsers = []string{"alice", "bob", "carol", "dave", "erin", "frank", "gina"}

// chainGoldenWorld (re)sets the state every golden request meets, with
// alice as the caller: bob is her friend, carol asked her (note "hi
// alice"), she asked dave, she blocked erin, frank blocked her, gina is a
// stranger, and zed does not exist. Whatever an earlier request changed
// between these users is undone first.
func chainGoldenWorld(t *testing.T, b *brokertest.B) {
	t.Helper()
	ts := time.Now().UnixMilli()
	err := b.Store().Update(func(tx storage.Tx) error {
		var errs []error
		for _, x := range chainGoldenUsers {
			for _, y := range chainGoldenUsers {
				if x != y {
					errs = append(errs, tx.Unfriend(x, y), tx.DeleteFriendRequest(x, y), tx.SetBlock(x, y, 0, false))
				}
			}
		}
		errs = append(errs,
			tx.SetFriends("alice", "bob", ts),
			tx.PutFriendRequest(storage.FriendRequest{From: "carol", To: "alice", Note: "hi alice", TS: ts}),
			tx.PutFriendRequest(storage.FriendRequest{From: "alice", To: "dave", TS: ts}),
			tx.SetBlock("alice", "erin", ts, true),
			tx.SetBlock("frank", "alice", ts, true),
		)
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("golden world: %v", err)
	}
}

// TestChainRequestGolden sends every golden request to a real broker, each
// to a fresh copy of the golden world, alternating MQTT 3.1.1 and 5.0, and
// compares the response code with the .golden file (-update rewrites them).
// The rid must come back exactly when the request had a valid one.
func TestChainRequestGolden(t *testing.T) {
	ents, err := os.ReadDir(chainRequestDir)
	if err != nil {
		t.Fatal(err)
	}
	b := chainStart(t, nil, chainGoldenUsers...)
	devs := []*chainDev{chainConnect(t, b, "alice", false), chainConnectAs(t, b, "alice", "alice-v5", true)}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasSuffix(name, ".golden") {
			continue
		}
		n++
		alice := devs[n%2]
		t.Run(name, func(t *testing.T) {
			alice.t = t
			payload, err := os.ReadFile(filepath.Join(chainRequestDir, name))
			if err != nil {
				t.Fatal(err)
			}
			chainGoldenWorld(t, b)
			ack, r := alice.send(payload)
			if ack != 0 {
				t.Errorf("PUBACK 0x%02x; a request is always acknowledged with success", ack)
			}
			if want := chainExpectedRid(payload); r.Rid != want || r.has("rid") != (want != "") {
				t.Errorf("response %s; want rid %q", r.Raw, want)
			}
			alice.alive()
			golden := filepath.Join(chainRequestDir, strings.TrimSuffix(name, filepath.Ext(name))+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(r.code()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run with -update to create it): %v", err)
			}
			if got := r.code(); got != strings.TrimSpace(string(want)) {
				t.Errorf("%s (%s): response %s; golden code %s", name, protoName(alice.c.V5), r.Raw, strings.TrimSpace(string(want)))
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d golden requests in %s", n, chainRequestDir)
	}
}

// TestChainRequestBadInput: bad payloads on im/req each get the documented
// error, with the rid only when the request carried a valid one, on a
// connection that stays up; afterwards the same device and another client
// are served as before.
func TestChainRequestBadInput(t *testing.T) {
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	cases := []struct {
		name    string
		payload string
		code    string
		rid     string // "" when the response must carry none
	}{
		{"non-JSON", `friend.list please`, "bad_request", ""},
		{"empty", ``, "bad_request", ""},
		{"JSON array", `[{"rid":"a1","op":"friend.list"}]`, "bad_request", ""},
		{"JSON string", `"friend.list"`, "bad_request", ""},
		{"JSON null", `null`, "bad_request", ""},
		{"truncated", `{"rid":"t1","op":"friend.li`, "bad_request", ""},
		{"missing op", `{"rid":"o1"}`, "bad_request", "o1"},
		{"op not a string", `{"rid":"o2","op":["friend.list"]}`, "bad_request", "o2"},
		{"unknown op", `{"rid":"o3","op":"friend.steal"}`, "bad_request", "o3"},
		{"missing user", `{"rid":"u1","op":"friend.request"}`, "bad_request", "u1"},
		{"user not a string", `{"rid":"u2","op":"block.add","user":{"id":"bob"}}`, "bad_request", "u2"},
		{"user does not exist", `{"rid":"u3","op":"friend.request","user":"zed"}`, "no_such_user", "u3"},
		{"invalid user id", `{"rid":"u4","op":"friend.request","user":"Bob"}`, "bad_request", "u4"},
		{"user id too long", `{"rid":"u5","op":"block.add","user":"` + strings.Repeat("b", 33) + `"}`, "bad_request", "u5"},
		{"user id with a wildcard", `{"rid":"u6","op":"friend.request","user":"#"}`, "bad_request", "u6"},
		{"note too long", `{"rid":"n1","op":"friend.request","user":"bob","note":"` + strings.Repeat("n", 257) + `"}`, "bad_request", "n1"},
		{"rid missing", `{"op":"friend.list"}`, "bad_request", ""},
		{"rid empty", `{"rid":"","op":"friend.list"}`, "bad_request", ""},
		{"rid too long", `{"rid":"` + strings.Repeat("r", 65) + `","op":"friend.list"}`, "bad_request", ""},
		{"rid not a string", `{"rid":12,"op":"friend.list"}`, "bad_request", ""},
		{"rid an array", `{"rid":["r"],"op":"friend.list"}`, "bad_request", ""},
		{"10,000-deep nesting", deep, "bad_request", ""},
		{"10,000-deep nesting in a field", `{"rid":"d1","op":"friend.list","x":` + deep + `}`, "bad_request", ""},
		{"binary garbage", "\x00\x01\xff\xfe\x80\x7f{\"\xc3\x28\x00", "bad_request", ""},
		{"NUL bytes", "\x00\x00\x00\x00", "bad_request", ""},
		{"valid request with trailing garbage", `{"rid":"g1","op":"friend.list"}garbage`, "bad_request", ""},
	}
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob")
			alice := chainConnect(t, b, "alice", v5)
			for _, c := range cases {
				ack, r := alice.send([]byte(c.payload))
				if ack != 0 {
					t.Errorf("%s: PUBACK 0x%02x; a request is always acknowledged with success", c.name, ack)
				}
				if r.OK || r.code() != c.code {
					t.Errorf("%s: response %.200s; want %s", c.name, r.Raw, c.code)
				}
				if r.Rid != c.rid || r.has("rid") != (c.rid != "") {
					t.Errorf("%s: response %.200s; want rid %q", c.name, r.Raw, c.rid)
				}
				if len(r.Raw) > 1024 {
					t.Errorf("%s: a response of %d bytes", c.name, len(r.Raw))
				}
				alice.alive()
			}
			// The same device, and another client, are served as before.
			alice.expectFriends(nil, nil, nil)
			bob := chainConnect(t, b, "bob", v5)
			bob.ok("friend.request", "user", "alice")
			alice.expectEvent("friend.request", "bob", "", "", 0)
		})
	}
}

// TestChainRequestOverPacketLimit: a 1 MiB publish to im/req is over the
// packet limit. MQTT 5 clients were told the limit: the broker closes that
// connection after DISCONNECT 0x95. An MQTT 3.1.1 client could not be told:
// its publish is read past and acknowledged, the connection stays. Either
// way nothing of it happens and everyone else is served on.
func TestChainRequestOverPacketLimit(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(protoName(v5), func(t *testing.T) {
			t.Parallel()
			b := chainStart(t, nil, "alice", "bob", "mallory")
			alice := chainConnect(t, b, "alice", v5)

			conn, br := chainRawConnect(t, b.Addr("mqtt"), v5, "mallory")
			payload := []byte(`{"rid":"big","op":"friend.request","user":"alice","note":"` + strings.Repeat("x", 1<<20) + `"}`)
			version := byte(4)
			if v5 {
				version = 5
			}
			pk := brokertest.Encode(t, version, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "im/req", Payload: payload})
			// The broker may close while the packet is still being
			// written; the write's error is expected then.
			go func() { _, _ = conn.Write(pk) }()
			_ = conn.SetReadDeadline(time.Now().Add(brokertest.Timeout))
			for !v5 {
				typ, _, err := chainReadPacket(br)
				if err != nil {
					t.Fatalf("3.1.1: connection ended before the PUBACK: %v", err)
				}
				if typ == packets.Puback {
					break
				}
			}
			for v5 {
				typ, body, err := chainReadPacket(br)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("the connection is still open %s after a 1 MiB packet", brokertest.Timeout)
					}
					break // closed
				}
				if typ != packets.Disconnect || !v5 || len(body) < 1 || body[0] != 0x95 {
					t.Fatalf("got packet type %d body % x; want only a v5 DISCONNECT 0x95, then the close", typ, body)
				}
			}

			// Nothing of it happened, and the broker serves on.
			alice.quiet(alice.evTopic())
			alice.expectFriends(nil, nil, nil)
			bob := chainConnect(t, b, "bob", v5)
			chainBefriend(t, bob, alice)
			chainSendDM(t, alice, bob, "after-big", 1)
		})
	}
}

// chainRawConnect dials addr and connects as user with hand-encoded packets,
// returning the connection and its reader once CONNACK accepted it.
func chainRawConnect(t *testing.T, addr string, v5 bool, user string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, brokertest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	version := byte(4)
	if v5 {
		version = 5
	}
	if _, err := conn.Write(brokertest.Encode(t, version, brokertest.ConnectPacket(brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: user + "-raw", Keepalive: 30}))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(brokertest.Timeout))
	typ, body, err := chainReadPacket(br)
	if err != nil || typ != packets.Connack || len(body) < 2 || body[1] != 0 {
		t.Fatalf("raw connect %s: type %d body % x err %v; want an accepting CONNACK", user, typ, body, err)
	}
	return conn, br
}

// chainReadPacket reads one MQTT packet: its type and body.
func chainReadPacket(br *bufio.Reader) (byte, []byte, error) {
	h, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, err
	}
	return h >> 4, body, nil
}
