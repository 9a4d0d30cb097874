package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/hooks"
)

// oversizeConn sits between a client's connection and mochi. mochi ends
// the connection on any packet over the maximum packet size without reading
// it. MQTT 5 clients are told that size in CONNACK and may not exceed it,
// but a 3.1.1 client cannot be told: one that publishes a payload far over
// max_payload at QoS 1 would be cut off, reconnect and resend it for ever.
// So, for MQTT 3.1.1 (and 3.1) only, an oversized PUBLISH is read past
// (discarded as it arrives, never held in memory) and handed to mochi as
// the same publish with an empty payload on hooks.TooLargeTopic(topic),
// which the hook refuses with too_large: acknowledged, error on res.
// Every other byte passes through unchanged.
type oversizeConn struct {
	net.Conn
	r       *bufio.Reader
	max     int    // mochi's maximum packet size: remaining+1 above it is too large
	version byte   // protocol level of the CONNECT, 0 until seen
	out     []byte // bytes ready for mochi
	pass    int    // bytes of the current packet still to pass through
	raw     bool   // stream not understood: pass everything from here on
}

// oversizeBuf is the read buffer of an oversizeConn: small, as every idle
// connection keeps one. Bodies larger than it are read straight into
// mochi's buffer; it holds fixed headers and the start of a CONNECT.
const oversizeBuf = 256

func newOversizeConn(c net.Conn, max int) *oversizeConn {
	return &oversizeConn{Conn: c, r: bufio.NewReaderSize(c, oversizeBuf), max: max}
}

func (c *oversizeConn) Read(p []byte) (int, error) {
	if len(c.out) == 0 && c.pass == 0 && !c.raw {
		if err := c.next(); err != nil && len(c.out) == 0 {
			return 0, err
		}
	}
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	if c.raw {
		return c.r.Read(p)
	}
	if len(p) > c.pass {
		p = p[:c.pass]
	}
	n, err := c.r.Read(p)
	c.pass -= n
	return n, err
}

// next reads the fixed header of the next packet and prepares what mochi
// gets of it: the header and its body passed through, or a stand-in for an
// oversized 3.1.1 publish.
func (c *oversizeConn) next() error {
	first, err := c.r.ReadByte()
	if err != nil {
		return err
	}
	hdr := []byte{first}
	remaining, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			c.out = hdr
			return err
		}
		hdr = append(hdr, b)
		remaining += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			// Malformed length: mochi reports it.
			c.out, c.raw = hdr, true
			return nil
		}
		mult *= 128
	}
	typ := first >> 4
	if typ == 1 && c.version == 0 && remaining+1 <= c.max {
		// (An oversized CONNECT passes as it is, for mochi to refuse
		// at once: peeking would wait for bytes that may never come.)
		c.version = c.peekVersion(remaining)
	}
	if typ == 3 && remaining+1 > c.max && (c.version == 3 || c.version == 4) {
		return c.standIn(first, remaining)
	}
	c.out, c.pass = hdr, remaining
	return nil
}

// peekVersion returns the protocol level of a CONNECT whose body is next:
// a 2-byte name length, the name ("MQTT", or "MQIsdp" for 3.1), the level.
func (c *oversizeConn) peekVersion(remaining int) byte {
	b, err := c.r.Peek(min(remaining, 2))
	if err != nil || len(b) < 2 {
		return 0
	}
	at := 2 + int(binary.BigEndian.Uint16(b))
	if at >= remaining || at > 16 {
		return 0
	}
	b, err = c.r.Peek(at + 1)
	if err != nil {
		return 0
	}
	return b[at]
}

// standIn reads an oversized publish's topic and packet id, discards the
// rest, and queues the same publish with an empty payload on the marked
// topic.
func (c *oversizeConn) standIn(first byte, remaining int) error {
	var l [2]byte
	if _, err := io.ReadFull(c.r, l[:]); err != nil {
		return err
	}
	tl := int(binary.BigEndian.Uint16(l[:]))
	idLen := 0
	if (first>>1)&3 > 0 {
		idLen = 2
	}
	if 2+tl+idLen > remaining {
		return errors.New("publish: topic longer than the packet")
	}
	topic := make([]byte, tl)
	if _, err := io.ReadFull(c.r, topic); err != nil {
		return err
	}
	var id [2]byte
	if _, err := io.ReadFull(c.r, id[:idLen]); err != nil {
		return err
	}
	if _, err := c.r.Discard(remaining - 2 - tl - idLen); err != nil {
		return err
	}
	marked := hooks.TooLargeTopic(string(topic))
	if len(marked) > 0xffff {
		marked = marked[:0xffff]
	}
	pk := packets.Packet{TopicName: marked, ProtocolVersion: c.version}
	if err := pk.FixedHeader.Decode(first); err != nil {
		return err
	}
	if idLen > 0 {
		pk.PacketID = binary.BigEndian.Uint16(id[:])
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		return err
	}
	c.out = buf.Bytes()
	return nil
}
