package broker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/hooks"
)

// The tests of issue 7 (abuse limits, disk errors, conformance mode, raw
// stream fuzzing) share the helpers of this file; their names start with
// "hd" (hardening) because other test files of this package have helpers of
// their own.

// hdDev is a connected device subscribed to its user's inbox. What it
// receives and has not been taken yet is held, so that waiting for one
// message never throws away another.
type hdDev struct {
	t    *testing.T
	user string
	c    *brokertest.Client
	held []hdMsg
}

// hdMsg is a received message with its JSON payload decoded.
type hdMsg struct {
	brokertest.Msg
	obj map[string]any
}

// hdConnect connects user (password "pw-"+user) with clientID and
// subscribes it to im/u/{user}/#.
func hdConnect(t *testing.T, b *brokertest.B, user, clientID string, v5 bool) *hdDev {
	t.Helper()
	c, err := b.Dial(brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: clientID})
	if err != nil {
		t.Fatalf("connect %s as %s: %v", clientID, user, err)
	}
	t.Cleanup(c.Close)
	d := &hdDev{t: t, user: user, c: c}
	if code, err := c.Subscribe("im/u/"+user+"/#", 1); err != nil || code != 1 {
		t.Fatalf("%s: subscribe to its inbox: code 0x%02x, %v", clientID, code, err)
	}
	return d
}

// await returns the first message, held or arriving, on topic whose
// payload field key has the string value want.
func (d *hdDev) await(topic, key, want string) hdMsg {
	d.t.Helper()
	match := func(m hdMsg) bool { s, _ := m.obj[key].(string); return m.Topic == topic && s == want }
	for i, m := range d.held {
		if match(m) {
			d.held = slices.Delete(d.held, i, i+1)
			return m
		}
	}
	deadline := time.After(brokertest.Timeout)
	for {
		select {
		case raw := <-d.c.Msgs:
			m := hdMsg{Msg: raw}
			_ = json.Unmarshal(raw.Payload, &m.obj)
			if match(m) {
				return m
			}
			d.held = append(d.held, m)
		case <-deadline:
			d.t.Fatalf("%s: nothing on %s with %s=%q within %s (holding %d others)", d.c.ID, topic, key, want, brokertest.Timeout, len(d.held))
			return hdMsg{}
		}
	}
}

// hdOutcome is what became of a sent message.
type hdOutcome struct {
	accepted bool
	seq      float64 // the seq of an accepted message
	code     string  // the error code of a refused one
	reason   byte    // the MQTT 5 PUBACK reason code (0 on 3.1.1)
}

// sendDM publishes a DM with id at QoS 1 and tells accepted from refused
// by what the sender gets back: its own copy of the stored message, or the
// error on its res topic, both carrying id.
func (d *hdDev) sendDM(peer, id string) hdOutcome {
	d.t.Helper()
	reason, err := d.c.Publish("im/dm/"+peer, 1, []byte(fmt.Sprintf(`{"id":%q,"body":"hello"}`, id)))
	if err != nil {
		d.t.Fatalf("%s: publish %s: %v", d.c.ID, id, err)
	}
	own, res := "im/u/"+d.user+"/dm/"+peer, "im/u/"+d.user+"/res"
	deadline := time.Now().Add(brokertest.Timeout)
	for time.Now().Before(deadline) {
		for i, m := range d.held {
			if s, _ := m.obj["id"].(string); s != id {
				continue
			}
			switch m.Topic {
			case own:
				d.held = slices.Delete(d.held, i, i+1)
				seq, _ := m.obj["seq"].(float64)
				return hdOutcome{accepted: true, seq: seq, reason: reason}
			case res:
				d.held = slices.Delete(d.held, i, i+1)
				if ok, _ := m.obj["ok"].(bool); ok {
					d.t.Fatalf("%s: res for message %s says ok: %s", d.c.ID, id, m.Payload)
				}
				e, _ := m.obj["error"].(map[string]any)
				code, _ := e["code"].(string)
				return hdOutcome{code: code, reason: reason}
			}
		}
		select {
		case raw := <-d.c.Msgs:
			m := hdMsg{Msg: raw}
			_ = json.Unmarshal(raw.Payload, &m.obj)
			d.held = append(d.held, m)
		case <-time.After(time.Until(deadline)):
		}
	}
	d.t.Fatalf("%s: neither its own copy nor an error for message %s within %s", d.c.ID, id, brokertest.Timeout)
	return hdOutcome{}
}

// request publishes a request with rid and returns its response. The
// publish to im/req is always acknowledged with success (PROTOCOL.md
// section 5), also when the request is refused.
func (d *hdDev) request(rid, op string, fields map[string]any) map[string]any {
	d.t.Helper()
	req := map[string]any{"rid": rid, "op": op}
	for k, v := range fields {
		req[k] = v
	}
	p, _ := json.Marshal(req)
	reason, err := d.c.Publish("im/req", 1, p)
	if err != nil || reason != 0 {
		d.t.Fatalf("%s: publish request %s: reason 0x%02x, %v", d.c.ID, rid, reason, err)
	}
	return d.await("im/u/"+d.user+"/res", "rid", rid).obj
}

// hdErrCode returns the error code of a response, "" for a success.
func hdErrCode(resp map[string]any) string {
	if ok, _ := resp["ok"].(bool); ok {
		return ""
	}
	e, _ := resp["error"].(map[string]any)
	c, _ := e["code"].(string)
	if c == "" {
		return "(no code)"
	}
	return c
}

// hdStats returns GET /stats.
func hdStats(t *testing.T, b *brokertest.B) broker.Stats {
	t.Helper()
	c := &http.Client{Timeout: brokertest.Timeout}
	resp, err := c.Get("http://" + b.Addr("http") + "/stats")
	if err != nil {
		t.Fatalf("GET /stats: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /stats: %s", resp.Status)
	}
	var s broker.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("GET /stats: %v", err)
	}
	return s
}

// hdLimited returns the /stats count of refusals by one limit, failing the
// test if /stats does not list that limit.
func hdLimited(t *testing.T, b *brokertest.B, limit string) uint64 {
	t.Helper()
	s := hdStats(t, b)
	n, ok := s.Limited[limit]
	if !ok {
		t.Fatalf("/stats limited_by_limit has no %q: %v", limit, s.Limited)
	}
	return n
}

// hdProto names a protocol level in subtest names.
func hdProto(v5 bool) string {
	if v5 {
		return "mqtt5"
	}
	return "mqtt311"
}

// hdRateBound is the most a token bucket of rate r (burst 2r) can let
// through in elapsed time, plus one for rounding.
func hdRateBound(r float64, elapsed time.Duration) int {
	return int(2*r+r*elapsed.Seconds()) + 1
}

func TestLimitMessagesPerSecond(t *testing.T) {
	const rate = 5 // burst 10
	for _, v5 := range []bool{false, true} {
		t.Run(hdProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, func(c *broker.Config) {
				c.Limits.MessagesPerSecond = rate
				c.Limits.RequestsPerSecond = 1e6
			})
			b.Users("alice", "bob", "carol")
			b.MakeFriends(t, "alice", "bob")
			b.MakeFriends(t, "carol", "bob")
			bob := hdConnect(t, b, "bob", "bob-dev", true)
			alice := hdConnect(t, b, "alice", "alice-dev", v5)
			carol := hdConnect(t, b, "carol", "carol-dev", v5)

			// The burst goes through, however slowly the machine runs: a
			// bucket only fills up over time.
			start := time.Now()
			var accepted []string
			for i := range 2 * rate {
				id := fmt.Sprintf("m-%d", i)
				if o := alice.sendDM("bob", id); !o.accepted || o.reason != 0 {
					t.Fatalf("message %d of the burst refused: %+v", i, o)
				}
				accepted = append(accepted, id)
			}
			// Then the bucket runs dry: a refusal must come before more
			// than the bucket can have held went through.
			var refused string
			var out hdOutcome
			for i := 2 * rate; i < 200 && refused == ""; i++ {
				id := fmt.Sprintf("m-%d", i)
				if out = alice.sendDM("bob", id); out.accepted {
					accepted = append(accepted, id)
				} else {
					refused = id
				}
			}
			elapsed := time.Since(start)
			if refused == "" {
				t.Fatalf("200 messages in %s, none refused", elapsed)
			}
			if max := hdRateBound(rate, elapsed); len(accepted) > max {
				t.Errorf("%d messages accepted in %s; a bucket of %v/s (burst %d) allows at most %d", len(accepted), elapsed, rate, 2*rate, max)
			}
			if out.code != "rate_limited" {
				t.Errorf("refused with error %q, want rate_limited", out.code)
			}
			if wantReason := byte(0x97); v5 && out.reason != wantReason {
				t.Errorf("PUBACK reason 0x%02x, want 0x%02x", out.reason, wantReason)
			}

			// Another user's budget is untouched, at the same moment.
			if o := carol.sendDM("bob", "c-1"); !o.accepted || o.reason != 0 {
				t.Fatalf("carol's message refused while alice is limited: %+v", o)
			}
			// And so is alice's request budget.
			if code := hdErrCode(alice.request("r-1", "friend.list", nil)); code != "" {
				t.Errorf("alice's request while her messages are limited: %s", code)
			}

			// bob got exactly the accepted messages: carol's, committed after
			// the refusal, comes after every one of alice's in his stream.
			var got []string
			for {
				m := bob.c.Next(t)
				var dm struct{ ID, From string }
				if err := json.Unmarshal(m.Payload, &dm); err != nil || m.Topic != "im/u/bob/dm/"+dm.From {
					continue
				}
				if dm.From == "carol" {
					break
				}
				got = append(got, dm.ID)
			}
			if !slices.Equal(got, accepted) {
				t.Errorf("bob got %v, want the accepted %v (refused: %s)", got, accepted, refused)
			}
			if s := hdStats(t, b); s.Messages != uint64(len(accepted)+1) {
				t.Errorf("/stats messages = %d, want %d: the refused one is not stored", s.Messages, len(accepted)+1)
			}
			if n := hdLimited(t, b, hooks.LimitMessages); n != 1 {
				t.Errorf("/stats limited_by_limit.%s = %d, want 1", hooks.LimitMessages, n)
			}
			if n := hdStats(t, b).MessagesRefused["rate_limited"]; n != 1 {
				t.Errorf("/stats messages_refused_by_code.rate_limited = %d, want 1", n)
			}
		})
	}
}

func TestLimitRequestsPerSecond(t *testing.T) {
	const rate = 5 // burst 10
	for _, v5 := range []bool{false, true} {
		t.Run(hdProto(v5), func(t *testing.T) {
			b := brokertest.Start(t, func(c *broker.Config) {
				c.Limits.RequestsPerSecond = rate
				c.Limits.MessagesPerSecond = 1e6
			})
			b.Users("alice", "bob", "carol")
			b.MakeFriends(t, "alice", "bob")
			alice := hdConnect(t, b, "alice", "alice-dev", v5)
			carol := hdConnect(t, b, "carol", "carol-dev", v5)

			start := time.Now()
			ok := 0
			for i := range 2 * rate {
				if code := hdErrCode(alice.request(fmt.Sprintf("r-%d", i), "friend.list", nil)); code != "" {
					t.Fatalf("request %d of the burst refused: %s", i, code)
				}
				ok++
			}
			limited := ""
			for i := 2 * rate; i < 200 && limited == ""; i++ {
				rid := fmt.Sprintf("r-%d", i)
				switch code := hdErrCode(alice.request(rid, "friend.list", nil)); code {
				case "":
					ok++
				case "rate_limited":
					limited = rid
				default:
					t.Fatalf("request %s: error %s, want success or rate_limited", rid, code)
				}
			}
			elapsed := time.Since(start)
			if limited == "" {
				t.Fatalf("200 requests in %s, none refused", elapsed)
			}
			if max := hdRateBound(rate, elapsed); ok > max {
				t.Errorf("%d requests served in %s; a bucket of %v/s allows at most %d", ok, elapsed, rate, max)
			}

			if code := hdErrCode(carol.request("c-1", "friend.list", nil)); code != "" {
				t.Errorf("carol's request while alice is limited: %s", code)
			}
			// Messages have a budget of their own.
			if o := alice.sendDM("bob", "m-1"); !o.accepted {
				t.Errorf("alice's message while her requests are limited: %+v", o)
			}
			if n := hdLimited(t, b, hooks.LimitRequests); n != 1 {
				t.Errorf("/stats limited_by_limit.%s = %d, want 1", hooks.LimitRequests, n)
			}
			if n := hdStats(t, b).RequestsRefused["rate_limited"]; n != 1 {
				t.Errorf("/stats requests_refused_by_code.rate_limited = %d, want 1", n)
			}
		})
	}
}

// hdConnectErr dials and returns the CONNACK refusal code, 0 if connected
// (the connection is then closed when the test ends).
func hdConnectErr(t *testing.T, b *brokertest.B, o brokertest.Opts) byte {
	t.Helper()
	c, err := b.Dial(o)
	if err == nil {
		t.Cleanup(c.Close)
		return 0
	}
	ce, ok := err.(*brokertest.ConnectError)
	if !ok {
		t.Fatalf("connect %s: %v", o.ClientID, err)
	}
	return ce.Code
}

func TestLimitConnectionsPerUser(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.Limits.ConnectionsPerUser = 2 })
	b.Users("alice", "bob")
	as := func(user, clientID string, v5 bool) brokertest.Opts {
		return brokertest.Opts{V5: v5, User: user, Password: "pw-" + user, ClientID: clientID}
	}
	if code := hdConnectErr(t, b, as("alice", "alice-1", false)); code != 0 {
		t.Fatalf("alice's first device: CONNACK 0x%02x", code)
	}
	second, err := b.Dial(as("alice", "alice-2", true))
	if err != nil {
		t.Fatalf("alice's second device: %v", err)
	}
	defer second.Close()

	refusals := []struct {
		name     string
		v5       bool
		clientID string
		want     byte
	}{
		{"mqtt311 third device", false, "alice-3", 3},
		{"mqtt5 third device", true, "alice-4", 0x97},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			if code := hdConnectErr(t, b, as("alice", r.clientID, r.v5)); code != r.want {
				t.Fatalf("CONNACK 0x%02x, want 0x%02x", code, r.want)
			}
		})
	}
	if n := hdLimited(t, b, hooks.LimitConnections); n != uint64(len(refusals)) {
		t.Errorf("/stats limited_by_limit.%s = %d, want %d", hooks.LimitConnections, n, len(refusals))
	}

	// A takeover replaces a device: it is no new connection.
	if code := hdConnectErr(t, b, as("alice", "alice-1", true)); code != 0 {
		t.Errorf("takeover of alice-1 at the limit: CONNACK 0x%02x", code)
	}
	// Other users are not affected.
	for _, id := range []string{"bob-1", "bob-2"} {
		if code := hdConnectErr(t, b, as("bob", id, id == "bob-2")); code != 0 {
			t.Errorf("bob's device %s while alice is at her limit: CONNACK 0x%02x", id, code)
		}
	}
	// A device that leaves makes room.
	second.Close()
	brokertest.Eventually(t, "alice-2 gone", func() bool { return hdStats(t, b).DevicesOnline == 3 })
	if code := hdConnectErr(t, b, as("alice", "alice-3", false)); code != 0 {
		t.Errorf("alice-3 after alice-2 left: CONNACK 0x%02x", code)
	}
	if n := hdLimited(t, b, hooks.LimitConnections); n != uint64(len(refusals)) {
		t.Errorf("/stats limited_by_limit.%s = %d after the accepted ones, want %d", hooks.LimitConnections, n, len(refusals))
	}
}

func TestLimitSubscriptionsPerClient(t *testing.T) {
	const max = 3
	for _, v5 := range []bool{false, true} {
		t.Run(hdProto(v5), func(t *testing.T) {
			refused := byte(0x80)
			if v5 {
				refused = 0x87
			}
			b := brokertest.Start(t, func(c *broker.Config) {
				c.Limits.SubscriptionsPerClient = max
				c.OpenTopics = []string{"t/#"}
			})
			b.Users("alice", "bob")
			sub := func(c *brokertest.Client, filter string, want byte) {
				t.Helper()
				code, err := c.Subscribe(filter, 1)
				if err != nil || code != want {
					t.Fatalf("%s: subscribe %s: code 0x%02x, %v; want 0x%02x", c.ID, filter, code, err, want)
				}
			}
			a1 := b.Connect(t, "alice", v5)
			for i := 1; i <= max; i++ {
				sub(a1, fmt.Sprintf("t/%d", i), 1)
			}
			sub(a1, "t/4", refused)
			// The IM inbox counts like any other filter.
			sub(a1, "im/u/alice/#", refused)
			// Subscribing again to a filter it has is no new subscription.
			sub(a1, "t/1", 1)
			if n := hdLimited(t, b, hooks.LimitSubscriptions); n != 2 {
				t.Errorf("/stats limited_by_limit.%s = %d, want 2", hooks.LimitSubscriptions, n)
			}

			// The refused filter delivers nothing: of t/4 then t/3, a1 gets
			// t/3 first.
			bob := b.Connect(t, "bob", true)
			for _, topic := range []string{"t/4", "t/3"} {
				if r, err := bob.Publish(topic, 1, []byte(topic)); err != nil || r != 0 {
					t.Fatalf("bob publishes on %s: 0x%02x, %v", topic, r, err)
				}
			}
			if m := a1.Next(t); m.Topic != "t/3" {
				t.Errorf("alice got a message on %s; the subscription to it was refused", m.Topic)
			}

			// The limit is per client: alice's other device and bob have
			// their own.
			a2, err := b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: "pw-alice", ClientID: "alice-other"})
			if err != nil {
				t.Fatal(err)
			}
			defer a2.Close()
			for _, c := range []*brokertest.Client{a2, bob} {
				for i := 4; i < 4+max; i++ {
					sub(c, fmt.Sprintf("t/%d", i), 1)
				}
			}

			// One SUBSCRIBE with more filters than the limit: the first ones
			// are granted, the rest refused.
			r := b.Raw(t, v5)
			if ack := r.Connect(brokertest.Opts{ClientID: "alice-raw", User: "alice", Password: "pw-alice", Keepalive: 30}); ack.ReasonCode != 0 {
				t.Fatalf("raw CONNACK 0x%02x", ack.ReasonCode)
			}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 9}
			for _, f := range []string{"t/a", "t/b", "t/c", "t/d", "t/e"} {
				pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
			}
			r.Send(pk)
			ack := r.Expect(packets.Suback)
			if want := []byte{1, 1, 1, refused, refused}; !slices.Equal(ack.ReasonCodes, want) {
				t.Errorf("SUBACK codes %x, want %x", ack.ReasonCodes, want)
			}
			if n := hdLimited(t, b, hooks.LimitSubscriptions); n != 4 {
				t.Errorf("/stats limited_by_limit.%s = %d, want 4", hooks.LimitSubscriptions, n)
			}
		})
	}
}

func TestLimitMaxClients(t *testing.T) {
	const max = 3
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxClients = max })
	b.Users("alice", "bob", "carol", "dave")
	var first *brokertest.Client
	for i, u := range []string{"alice", "bob", "carol"} {
		c, err := b.Dial(brokertest.Opts{V5: i == 0, User: u, Password: "pw-" + u, ClientID: u + "-dev"})
		if err != nil {
			t.Fatalf("client %d of %d: %v", i+1, max, err)
		}
		t.Cleanup(c.Close)
		if first == nil {
			first = c
		}
	}
	// Refused before the credentials are checked: "server unavailable" on
	// 3.1.1, "server busy" on 5.0.
	for _, tc := range []struct {
		v5   bool
		want byte
	}{{false, 3}, {true, 0x89}} {
		t.Run(hdProto(tc.v5), func(t *testing.T) {
			if code := hdConnectErr(t, b, brokertest.Opts{V5: tc.v5, User: "dave", Password: "pw-dave", ClientID: "dave-dev"}); code != tc.want {
				t.Fatalf("CONNACK 0x%02x, want 0x%02x", code, tc.want)
			}
		})
	}
	t.Run("counted", func(t *testing.T) {
		n, ok := hdStats(t, b).Limited["max_clients"]
		if !ok {
			t.Fatal("/stats limited_by_limit has no max_clients")
		}
		if n != 2 {
			t.Errorf("/stats limited_by_limit.max_clients = %d, want 2", n)
		}
	})
	first.Close()
	brokertest.Eventually(t, "a client gone", func() bool { return hdStats(t, b).Broker.ClientsConnected < max })
	if code := hdConnectErr(t, b, brokertest.Opts{User: "dave", Password: "pw-dave", ClientID: "dave-dev"}); code != 0 {
		t.Errorf("after a client left: CONNACK 0x%02x", code)
	}
}
