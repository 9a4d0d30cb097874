package broker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// FuzzRawStream writes fuzzer-chosen bytes to a real listener connection,
// after an optional valid prefix (CONNECT, or CONNECT and SUBSCRIBE), then
// half-closes it, reads until the broker closes its side, and checks that
// the broker still serves: a canary connects and gets its SUBACK. A panic
// the connection guard recovers is a finding too, except mochi issue #501
// (known, and what the guard is for).
//
// Seeds are whole valid MQTT 3.1.1 and 5.0 sessions; `go test` runs them,
// `go test -fuzz FuzzRawStream` mutates them. One broker serves a whole
// fuzzing process.
func FuzzRawStream(f *testing.F) {
	for _, v5 := range []bool{false, true} {
		s := hdSession(f, v5)
		all := bytes.Join(s, nil)
		f.Add(v5, uint8(0), all)
		f.Add(v5, uint8(1), bytes.Join(s[1:], nil))
		f.Add(v5, uint8(2), bytes.Join(s[2:], nil))
		// The session cut short inside the DM, and the DM sent twice.
		f.Add(v5, uint8(2), bytes.Join(s[2:], nil)[:len(s[2])+len(s[3])/2])
		f.Add(v5, uint8(2), bytes.Join([][]byte{s[3], s[3], s[4]}, nil))
	}
	// A Remaining Length of 268,435,455 on a CONNECT.
	f.Add(false, uint8(0), []byte{0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4, 'M', 'Q', 'T', 'T'})
	// mochi #501: a 5.0 SUBSCRIBE whose filter has no options byte.
	f.Add(true, uint8(1), []byte{0x82, 8, 0, 1, 0, 0, 3, 'a', '/', 'b'})

	dir := f.TempDir()
	var (
		once sync.Once
		rb   *hdRawBroker
	)
	f.Cleanup(func() {
		if rb != nil {
			rb.b.Close()
		}
	})
	f.Fuzz(func(t *testing.T, v5 bool, prefix uint8, data []byte) {
		once.Do(func() { rb = hdStartRawBroker(t, dir) })
		if rb == nil {
			t.Fatal("the broker did not start")
		}
		var in []byte
		if n := int(prefix % 3); n > 0 {
			in = bytes.Join(rb.session(v5)[:n], nil)
		}
		in = append(in, data...)

		rb.write(t, in)
		rb.canary(t, v5)
		// After the canary: the guard logs a panic after closing the
		// connection, so the log line may come a moment after our EOF.
		rb.checkPanics(t)
	})
}

// write sends in on a new connection, half-closes it and returns what the
// broker sent until it closed its side.
func (r *hdRawBroker) write(t *testing.T, in []byte) []byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", r.addr, brokertest.Timeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(brokertest.Timeout))
	// Read while writing: a broker blocked on writing to us would
	// otherwise never read the rest.
	var out bytes.Buffer
	drained := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, conn)
		drained <- err
	}()
	_, _ = conn.Write(in) // the broker may close first: that is fine
	_ = conn.(*net.TCPConn).CloseWrite()
	if err := <-drained; err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the broker kept the connection open %s after the client's EOF", brokertest.Timeout)
		}
	}
	return out.Bytes()
}

// hdRawBroker is the broker a fuzzing process writes to.
type hdRawBroker struct {
	b    *broker.Broker
	addr string
	log  *hdPanicLog
	// sessions are the encoded packets of a valid session, [3.1.1, 5.0].
	sessions [2][][]byte
}

const hdFuzzPassword = "pw-fuzz"

// hdSession is a valid session of user x: CONNECT, SUBSCRIBE im/u/x/#,
// PUBLISH im/req, PUBLISH im/dm/y (a friend), PINGREQ, DISCONNECT.
func hdSession(tb testing.TB, v5 bool) [][]byte {
	version := byte(4)
	if v5 {
		version = 5
	}
	pks := []packets.Packet{
		brokertest.ConnectPacket(brokertest.Opts{V5: v5, ClientID: "fz-x", User: "x", Password: hdFuzzPassword, Keepalive: 30}),
		{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "im/u/x/#", Qos: 1}}},
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2, TopicName: "im/req",
			Payload: []byte(`{"rid":"r1","op":"friend.list"}`)},
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3, TopicName: "im/dm/y",
			Payload: []byte(`{"id":"s1","body":"hi"}`)},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
		{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}},
	}
	out := make([][]byte, len(pks))
	for i, pk := range pks {
		out[i] = brokertest.Encode(tb, version, pk)
	}
	return out
}

func (r *hdRawBroker) session(v5 bool) [][]byte {
	if v5 {
		return r.sessions[1]
	}
	return r.sessions[0]
}

// hdStartRawBroker starts a broker with users x, y (friends) and canary,
// and limits out of the way of a fuzzer sending as fast as it can.
func hdStartRawBroker(t *testing.T, dir string) *hdRawBroker {
	t.Helper()
	log := &hdPanicLog{}
	c := brokertest.Config(dir)
	c.LogWriter = log
	c.Log.Level = "error"
	c.Listen.WS, c.Listen.HTTP = "off", "off"
	c.Limits = broker.Limits{MessagesPerSecond: 1e9, RequestsPerSecond: 1e9, ConnectionsPerUser: 1 << 20, SubscriptionsPerClient: 100}
	b, err := broker.New(c)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := b.Start(); err != nil {
		b.Close()
		t.Fatalf("broker.Start: %v", err)
	}
	// The canary's password is in no seed: the fuzzer cannot take its
	// session over.
	for u, pw := range map[string]string{"x": hdFuzzPassword, "y": hdFuzzPassword, "canary": "pw-canary"} {
		h, err := auth.HashPassword(pw)
		if err == nil {
			err = b.Store().CreateUser(storage.User{ID: u, Role: imqtt.RoleUser, Hash: h})
		}
		if err != nil {
			b.Close()
			t.Fatalf("user %s: %v", u, err)
		}
	}
	if err := b.Store().Update(func(tx storage.Tx) error { return tx.SetFriends("x", "y", time.Now().UnixMilli()) }); err != nil {
		b.Close()
		t.Fatal(err)
	}
	return &hdRawBroker{b: b, addr: b.Addr("mqtt"), log: log, sessions: [2][][]byte{hdSession(t, false), hdSession(t, true)}}
}

// canary checks that a fresh client still connects and subscribes.
func (r *hdRawBroker) canary(t *testing.T, v5 bool) {
	t.Helper()
	c := brokertest.DialRaw(t, r.addr, v5)
	defer c.Close()
	if ack := c.Connect(brokertest.Opts{ClientID: "canary", User: "canary", Password: "pw-canary", Keepalive: 30}); ack.ReasonCode != 0 {
		t.Fatalf("canary CONNACK 0x%02x", ack.ReasonCode)
	}
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "im/u/canary/#", Qos: 1}}})
	if ack := c.Expect(packets.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 1 {
		t.Fatalf("canary SUBACK %x", ack.ReasonCodes)
	}
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
}

// checkPanics fails the test on a panic the connection guard recovered
// since the last check, unless it is mochi #501.
func (r *hdRawBroker) checkPanics(t *testing.T) {
	t.Helper()
	for _, line := range r.log.take() {
		var e struct{ Panic, Stack string }
		_ = json.Unmarshal(line, &e)
		if hdKnownPanic(e.Panic, e.Stack) {
			continue
		}
		t.Fatalf("a connection goroutine panicked: %s\n%s", e.Panic, e.Stack)
	}
}

// hdKnownPanic recognises mochi issue #501: the SUBSCRIBE decoder reads a
// filter's options byte past the end of the packet.
func hdKnownPanic(msg, stack string) bool {
	return strings.Contains(msg, "index out of range") && strings.Contains(stack, "SubscribeDecode")
}

// hdPanicLog keeps the broker's log lines about recovered panics.
type hdPanicLog struct {
	mu    sync.Mutex
	lines [][]byte
}

func (l *hdPanicLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("panicked")) {
		l.mu.Lock()
		l.lines = append(l.lines, bytes.Clone(p))
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *hdPanicLog) take() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// The seeds are what they claim: a whole valid session gets every
// acknowledgement and stores its DM, and the guard's log line for mochi
// #501 is recognised as the known panic (and nothing else is).
func TestRawStreamSeeds(t *testing.T) {
	rb := hdStartRawBroker(t, t.TempDir())
	t.Cleanup(func() { rb.b.Close() })
	for i, v5 := range []bool{false, true} {
		out := rb.write(t, bytes.Join(rb.session(v5), nil))
		var types []byte
		for len(out) > 0 {
			var fh packets.FixedHeader
			if err := fh.Decode(out[0]); err != nil {
				t.Fatalf("%s: response stream: %v", hdProto(v5), err)
			}
			n, used, err := packets.DecodeLength(bytes.NewReader(out[1:]))
			if err != nil || 1+used+n > len(out) {
				t.Fatalf("%s: response stream cut short", hdProto(v5))
			}
			if fh.Type != packets.Publish { // res and the sender's own copy
				types = append(types, fh.Type)
			}
			out = out[1+used+n:]
		}
		want := []byte{packets.Connack, packets.Suback, packets.Puback, packets.Puback, packets.Pingresp}
		if !bytes.Equal(types, want) {
			t.Errorf("%s: the broker answered with packet types %v, want %v", hdProto(v5), types, want)
		}
		// Both sessions send the same message id: the second is an
		// idempotent retry.
		if s, err := rb.b.Stats(); err != nil || s.MessagesAccepted != 1 || s.IdempotentRetries != uint64(i) {
			t.Errorf("%s: %d messages accepted and %d retries (%v), want 1 and %d", hdProto(v5), s.MessagesAccepted, s.IdempotentRetries, err, i)
		}
	}

	prefix := bytes.Join(rb.session(true)[:1], nil)
	rb.write(t, append(prefix, 0x82, 8, 0, 1, 0, 0, 3, 'a', '/', 'b'))
	var lines [][]byte
	brokertest.Eventually(t, "the guard's log line", func() bool {
		lines = append(lines, rb.log.take()...)
		return len(lines) > 0
	})
	var e struct{ Panic, Stack string }
	if err := json.Unmarshal(lines[0], &e); err != nil || !hdKnownPanic(e.Panic, e.Stack) {
		t.Errorf("mochi #501 not recognised (%v): %s", err, lines[0])
	}
	if hdKnownPanic("runtime error: index out of range [3] with length 3", "github.com/imqtt/imqtt/hooks.(*Hook).OnPublish") {
		t.Error("a panic outside SubscribeDecode passes as mochi #501")
	}
	rb.canary(t, true)
}
