package brokertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Raw is a bare TCP connection that speaks hand-encoded MQTT, for input no
// well-behaved client library would send: malformed, truncated or oversize
// packets, or none at all.
type Raw struct {
	// V5 selects the protocol level packets are encoded and decoded with.
	V5   bool
	conn net.Conn
	br   *bufio.Reader
	t    testing.TB
}

// Raw dials the broker's MQTT listener; the connection is closed when the
// test ends.
func (b *B) Raw(t testing.TB, v5 bool) *Raw {
	t.Helper()
	return DialRaw(t, b.Addr("mqtt"), v5)
}

// DialRaw dials addr.
func DialRaw(t testing.TB, addr string, v5 bool) *Raw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Raw{V5: v5, conn: conn, br: bufio.NewReader(conn), t: t}
}

func (r *Raw) version() byte {
	if r.V5 {
		return 5
	}
	return 4
}

// Close closes the connection.
func (r *Raw) Close() { r.conn.Close() }

// Write writes bytes as they are, failing the test on error.
func (r *Raw) Write(p []byte) {
	r.t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := r.conn.Write(p); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

// Send encodes pk at the connection's protocol level and writes it.
func (r *Raw) Send(pk packets.Packet) {
	r.t.Helper()
	r.Write(Encode(r.t, r.version(), pk))
}

// Encode encodes pk with mochi's encoders at protocol level version.
func Encode(t testing.TB, version byte, pk packets.Packet) []byte {
	t.Helper()
	if pk.ProtocolVersion == 0 {
		pk.ProtocolVersion = version
	}
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("no encoder for packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

// ConnectPacket returns the CONNECT that o describes, at protocol level 5 if
// o.V5, else 3.1.1. Unlike Dial, it sends o.Keepalive as it is, 0 included,
// and a will of QoS 1 with payload "gone".
func ConnectPacket(o Opts) packets.Packet {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: o.ClientID,
			Keepalive:        o.Keepalive,
			Clean:            !o.Persistent,
			UsernameFlag:     o.User != "",
			Username:         []byte(o.User),
			PasswordFlag:     o.Password != "",
			Password:         []byte(o.Password),
		},
	}
	if o.V5 {
		pk.ProtocolVersion = 5
		if o.Persistent {
			pk.Properties.SessionExpiryInterval = 3600
			pk.Properties.SessionExpiryIntervalFlag = true
		}
	}
	if o.WillTopic != "" {
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = o.WillTopic
		pk.Connect.WillPayload = []byte("gone")
		pk.Connect.WillQos = 1
	}
	return pk
}

// Connect sends the CONNECT of o (its version is the connection's) and
// returns the CONNACK, failing the test if none comes.
func (r *Raw) Connect(o Opts) packets.Packet {
	r.t.Helper()
	o.V5 = r.V5
	r.Send(ConnectPacket(o))
	return r.Expect(packets.Connack)
}

// Read reads one packet, waiting at most Timeout.
func (r *Raw) Read() (packets.Packet, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(Timeout))
	var pk packets.Packet
	hb, err := r.br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r.br)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = r.version()
	body := make([]byte, n)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingresp:
		err = pk.PingrespDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		return pk, &DecodeError{err}
	}
	return pk, nil
}

// DecodeError is a packet that arrived whole but did not decode; the
// connection is still in step.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "decode: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Expect reads the next packet and fails the test unless it has type typ.
func (r *Raw) Expect(typ byte) packets.Packet {
	r.t.Helper()
	pk, err := r.Read()
	if err != nil {
		r.t.Fatalf("raw: waiting for packet type %d: %v", typ, err)
	}
	if pk.FixedHeader.Type != typ {
		r.t.Fatalf("raw: got packet type %d (reason 0x%02x), want %d", pk.FixedHeader.Type, pk.ReasonCode, typ)
	}
	return pk
}

// Closed waits until the broker closes the connection, skipping whatever
// packets (a CONNACK or DISCONNECT with a reason) come first, and returns
// them. It fails the test if the connection is still open after Timeout.
func (r *Raw) Closed() []packets.Packet {
	r.t.Helper()
	var got []packets.Packet
	for {
		pk, err := r.Read()
		var de *DecodeError
		if err == nil || errors.As(err, &de) {
			got = append(got, pk)
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return got
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("raw: connection still open after %s (got %d packets)", Timeout, len(got))
		}
		r.t.Fatalf("raw: reading while waiting for the broker to close: %v", err)
	}
}

// Ping sends PINGREQ and fails the test unless PINGRESP comes back.
func (r *Raw) Ping() {
	r.t.Helper()
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	r.Expect(packets.Pingresp)
}
