package hooks

import (
	"bytes"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

// maxWindow bounds the QoS 1 entries a device has unacknowledged at once;
// the client's Receive Maximum lowers it.
const maxWindow = 128

// inboxSub is a device's subscription to a filter under im/u/{me}/.
type inboxSub struct {
	filter string
	qos    byte
}

// sent is an entry written to a device and not yet folded into its cursor.
type sent struct {
	pos   uint64
	acked bool
}

// device delivers one connected client's stream: from its cursor, in order,
// at most window unacknowledged entries at a time. It runs a goroutine only
// while there is something to send, so idle devices cost no goroutine.
type device struct {
	h    *Hook
	cl   *mqtt.Client
	user string
	id   string

	mu       sync.Mutex
	subs     []inboxSub // replaced, never mutated, so readers may keep a copy
	running  bool
	again    bool // kicked while running: read the stream once more
	closed   bool
	next     uint64            // last position sent or passed over
	cursor   uint64            // every position up to here is acknowledged
	queue    []sent            // positions after cursor, in order
	inflight map[uint16]uint64 // packet id -> position
	window   int
	buf      []storage.Entry
	out      bytes.Buffer // packets encoded by step, written by flush
	outN     int64
	parked   *packets.Packet // see park
	// holdUntil is when the grace after the latest SUBSCRIBE ends: until
	// then delivery stops at a backlog entry no subscription matches
	// instead of passing it over, since the client may be about to
	// subscribe to it.
	holdUntil time.Time
	holdTimer *time.Timer
	// started is set when the first SUBACK has been written (or at connect
	// for a resumed session, which brings its subscriptions): a pump
	// kicked earlier must not deliver before the client has its SUBACK.
	started bool
	// backlogEnd is the stream head when the device connected: only the
	// backlog up to it is held. What arrives later is live, and passed
	// over at once if no subscription matches, as plain MQTT does.
	backlogEnd uint64
}

func (h *Hook) newDevice(cl *mqtt.Client, user string) *device {
	w := maxWindow
	if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < w {
		w = rm
	}
	d := &device{h: h, cl: cl, user: user, id: cl.ID, inflight: map[uint16]uint64{}, window: w}
	cur := h.cursorOf(cl.ID)
	head, err := h.o.Streams.StreamHead(user)
	if err == nil && h.o.BacklogMaxEntries > 0 && head > cur+uint64(h.o.BacklogMaxEntries) {
		// Over the backlog bound: the oldest entries are dropped.
		cur = head - uint64(h.o.BacklogMaxEntries)
	}
	d.next, d.cursor, d.backlogEnd = cur, cur, head
	return d
}

// cursorOf returns the device's cursor: the newest of the in-memory one
// (ahead of the store until flushed) and the stored one.
func (h *Hook) cursorOf(clientID string) uint64 {
	var cur uint64
	if v, ok := h.cursors.Load(clientID); ok {
		cur = v.(*atomic.Uint64).Load()
	}
	if stored, err := h.o.Streams.Cursor(clientID); err == nil && stored > cur {
		cur = stored
	}
	return cur
}

// setCursor records an acknowledged position for the flusher.
func (h *Hook) setCursor(clientID string, pos uint64) {
	v, _ := h.cursors.LoadOrStore(clientID, new(atomic.Uint64))
	c := v.(*atomic.Uint64)
	for {
		old := c.Load()
		if pos <= old || c.CompareAndSwap(old, pos) {
			break
		}
	}
	h.dirtyMu.Lock()
	h.dirty[clientID] = pos
	h.dirtyMu.Unlock()
}

// forgetCursor drops the in-memory cursor of a client that went away, once
// the store has it (no save is pending; a pending one is dropped by the
// flusher after saving). Kept, it would outlive the client id's binding:
// bound again after its user was removed, the id would get the old owner's
// position from cursorOf and skip the new owner's first entries.
func (h *Hook) forgetCursor(clientID string) {
	v, ok := h.cursors.Load(clientID)
	if !ok {
		return
	}
	h.dirtyMu.Lock()
	_, pending := h.dirty[clientID]
	h.dirtyMu.Unlock()
	if !pending {
		// A device of the same id that saves a position meanwhile finds
		// it pending in dirty, so the store still gets it.
		h.cursors.CompareAndDelete(clientID, v)
	}
}

// flushCursors persists acknowledged positions.
func (h *Hook) flushCursors() {
	h.dirtyMu.Lock()
	if len(h.dirty) == 0 {
		h.dirtyMu.Unlock()
		return
	}
	batch := h.dirty
	h.dirty = map[string]uint64{}
	h.dirtyMu.Unlock()
	if err := h.o.Streams.SaveCursors(batch); err != nil {
		h.log.Error().Err(err).Int("devices", len(batch)).Msg("saving delivery cursors failed; entries may be delivered again")
		return
	}
	// Saved cursors of devices that went away need no memory: the store
	// has them (clients with a new id each time would otherwise pile up).
	for id, pos := range batch {
		if cl, on := h.o.Server.Clients.Get(id); on && !cl.Closed() {
			continue
		}
		if v, ok := h.cursors.Load(id); ok && v.(*atomic.Uint64).Load() == pos {
			h.cursors.CompareAndDelete(id, v)
		}
	}
}

func (h *Hook) cursorFlusher(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-t.C:
			h.flushCursors()
			if n%300 == 0 {
				now := time.Now()
				h.msgLimit.forget(now)
				h.reqLimit.forget(now)
			}
		case <-stop:
			h.flushCursors()
			return
		}
	}
}

// setSubs recomputes the device's inbox subscriptions from mochi's view of
// the client and returns how many there are.
func (d *device) setSubs() int {
	prefix := "im/u/" + d.user + "/"
	var subs []inboxSub
	for f, s := range d.cl.State.Subscriptions.GetAll() {
		if len(f) > len(prefix) && f[:len(prefix)] == prefix {
			subs = append(subs, inboxSub{filter: f, qos: s.Qos})
		}
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].filter < subs[j].filter })
	d.mu.Lock()
	d.subs = subs
	d.mu.Unlock()
	return len(subs)
}

// qosFor returns the QoS to deliver topic at (capped at 1), or -1 when no
// subscription matches it.
func qosFor(subs []inboxSub, topic string) int {
	q := -1
	for _, s := range subs {
		if imqtt.TopicMatch(s.filter, topic) && int(s.qos) > q {
			q = int(s.qos)
		}
	}
	if q > 1 {
		q = 1
	}
	return q
}

// hold starts the grace after a SUBSCRIBE: a client that subscribes topic
// by topic (res first, then dm/+, then ev, each in its own SUBSCRIBE) would
// otherwise see the entries its first subscriptions do not match passed
// over, and lose that part of its backlog. When the grace ends the device
// is kicked, to pass over what is still unmatched.
func (d *device) hold() {
	g := d.h.o.SubscribeGrace
	if g <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.holdUntil = time.Now().Add(g)
	if d.holdTimer == nil {
		d.holdTimer = time.AfterFunc(g, d.kick)
	} else {
		d.holdTimer.Reset(g)
	}
}

// start lets delivery begin (see started) and kicks.
func (d *device) start() {
	d.mu.Lock()
	d.started = true
	d.mu.Unlock()
	d.kick()
}

// kick makes the device look at its stream again.
func (d *device) kick() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if d.running {
		d.again = true
		d.mu.Unlock()
		return
	}
	d.running = true
	d.mu.Unlock()
	go d.run()
}

func (d *device) run() {
	for d.step() {
	}
}

// step sends what the window allows and reports whether to go on.
func (d *device) step() bool {
	d.mu.Lock()
	room := d.window - len(d.inflight)
	if d.closed || !d.started || len(d.subs) == 0 || room <= 0 {
		// An acknowledgement or a subscription kicks again.
		d.running = false
		d.mu.Unlock()
		return false
	}
	after, subs, holdUntil := d.next, d.subs, d.holdUntil
	d.again = false
	d.mu.Unlock()

	entries, err := d.h.o.Streams.ReadStream(d.user, after, room, d.buf)
	d.buf = entries
	if err != nil {
		d.h.log.Error().Err(err).Str("client", d.id).Msg("reading delivery stream failed")
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
		return false
	}
	if len(entries) == 0 {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.again {
			return true
		}
		d.running = false
		return false
	}
	stop := false
	var oldest int64
	if d.h.o.BacklogMaxAge > 0 {
		oldest = time.Now().Add(-d.h.o.BacklogMaxAge).UnixMilli()
	}
	for i := range entries {
		e := &entries[i]
		topic := imqtt.InboxEvents(d.user)
		if e.Conv != "" {
			topic = imqtt.InboxTopic(d.user, e.Conv)
		}
		qos := qosFor(subs, topic)
		if qos < 0 && e.Pos <= d.backlogEnd && e.TS >= oldest && e.Payload != nil && time.Now().Before(holdUntil) {
			// Held: a SUBSCRIBE may still come for it; the grace timer
			// or that SUBSCRIBE kicks again.
			stop = true
			break
		}
		if qos < 0 || e.TS < oldest || e.Payload == nil {
			// Not subscribed, older than the backlog bound, or a message
			// of a deleted group: passed over.
			d.pass(e.Pos)
			continue
		}
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: byte(qos)},
			TopicName:   topic,
			Payload:     e.Payload,
			Created:     time.Now().Unix(),
			Origin:      "imqtt",
		}
		if d.cl.Properties.ProtocolVersion == 5 {
			pk.Properties.PayloadFormat = 1
			pk.Properties.PayloadFormatFlag = true
		}
		if e.Conv != "" {
			if age := time.Now().UnixMilli() - e.TS; age >= 0 && age < 60_000 {
				// Live deliveries only: a backlog's age is not latency.
				d.h.o.Observer.Delivered(time.Duration(age) * time.Millisecond)
			}
		}
		if qos == 1 && !d.track(&pk, e.Pos) {
			stop = true
			break
		}
		mark := d.out.Len()
		pk.ProtocolVersion = d.cl.Properties.ProtocolVersion
		err := pk.PublishEncode(&d.out)
		if err == nil {
			d.outN++
		}
		if max := d.cl.Properties.Props.MaximumPacketSize; err == nil && max > 0 && uint32(d.out.Len()-mark) > max {
			err = packets.ErrPacketTooLarge
		}
		if err != nil {
			if err == packets.ErrPacketTooLarge {
				d.outN--
			}
			// Too large for this client (its MQTT 5 Maximum Packet
			// Size): it can never take it, so it is passed over rather
			// than blocking everything after it.
			d.out.Truncate(mark)
			if qos == 1 {
				d.untrack(pk.PacketID)
			}
			d.h.log.Warn().Err(err).Str("client", d.id).Uint64("pos", e.Pos).Msg("entry not deliverable to this client; passed over")
			d.pass(e.Pos)
			continue
		}
		if qos == 0 {
			d.pass(e.Pos)
		}
	}
	if !d.flush() {
		return false
	}
	if stop {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.again {
			// Kicked while reading (a SUBSCRIBE, an acknowledgement):
			// what stopped this step may have changed.
			return true
		}
		d.running = false
		return false
	}
	return true
}

// flush writes the encoded packets in one write, under the client's lock
// as mochi's own WritePacket does: a backlog goes out in a few large writes
// instead of a system call per message.
func (d *device) flush() bool {
	if d.out.Len() == 0 {
		return true
	}
	defer d.out.Reset()
	n, packetsN := int64(d.out.Len()), d.outN
	d.outN = 0
	d.cl.Lock()
	var err error
	if d.cl.Closed() || d.cl.Net.Conn == nil {
		err = mqtt.ErrConnectionClosed
	} else {
		_, err = d.cl.Net.Conn.Write(d.out.Bytes())
	}
	d.cl.Unlock()
	if err != nil {
		// The connection is going; what was not acknowledged is sent
		// again on the next one.
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
		return false
	}
	info := d.h.o.Server.Info
	atomic.AddInt64(&info.BytesSent, n)
	atomic.AddInt64(&info.PacketsSent, packetsN)
	atomic.AddInt64(&info.MessagesSent, packetsN)
	return true
}

// untrack undoes track for a packet that was not sent.
func (d *device) untrack(pid uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if pos, ok := d.inflight[pid]; ok {
		delete(d.inflight, pid)
		if n := len(d.queue); n > 0 && d.queue[n-1].pos == pos {
			d.queue = d.queue[:n-1]
		}
		if d.cl.State.Inflight.Delete(pid) {
			atomic.AddInt64(&d.h.o.Server.Info.Inflight, -1)
		}
	}
}

// pass folds a position that needs no acknowledgement into the cursor.
func (d *device) pass(pos uint64) {
	d.mu.Lock()
	d.next = pos
	d.queue = append(d.queue, sent{pos: pos, acked: true})
	cur := d.advance()
	d.mu.Unlock()
	if cur > 0 {
		d.h.setCursor(d.id, cur)
	}
}

// track gives a QoS 1 packet an id and records it in mochi's inflight (so
// the PUBACK is matched and the id is not reused) and in the device.
func (d *device) track(pk *packets.Packet, pos uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.running = false
		return false
	}
	// mochi drops its inflight record of an id when the client publishes
	// with the same id (the directions share nothing in MQTT, mochi's map
	// does), so after a wrap of ids NextPacketID may offer one still
	// outstanding here: skip those.
	for tries := 0; ; tries++ {
		id, err := d.cl.NextPacketID()
		if err != nil || tries > len(d.inflight) {
			d.running = false
			return false
		}
		if _, busy := d.inflight[uint16(id)]; !busy {
			pk.PacketID = uint16(id)
			break
		}
	}
	// The window, not mochi's send quota, paces deliveries: the quota is
	// left alone so that mochi's own accounting cannot drift.
	if d.cl.State.Inflight.Set(*pk) {
		atomic.AddInt64(&d.h.o.Server.Info.Inflight, 1)
	}
	d.inflight[pk.PacketID] = pos
	d.queue = append(d.queue, sent{pos: pos})
	d.next = pos
	return true
}

// advance pops acknowledged positions off the queue and returns the new
// cursor, or 0 if it did not move. Called with d.mu held.
func (d *device) advance() uint64 {
	n := 0
	for n < len(d.queue) && d.queue[n].acked {
		n++
	}
	if n == 0 {
		return 0
	}
	d.cursor = d.queue[n-1].pos
	d.queue = append(d.queue[:0], d.queue[n:]...)
	return d.cursor
}

// ack handles a PUBACK; it reports whether the packet id was the device's.
func (d *device) ack(pid uint16) bool {
	d.mu.Lock()
	pos, ok := d.inflight[pid]
	if !ok {
		d.mu.Unlock()
		return false
	}
	delete(d.inflight, pid)
	i := sort.Search(len(d.queue), func(i int) bool { return d.queue[i].pos >= pos })
	if i < len(d.queue) && d.queue[i].pos == pos {
		d.queue[i].acked = true
	}
	cur := d.advance()
	d.mu.Unlock()
	if cur > 0 {
		d.h.setCursor(d.id, cur)
	}
	d.kick()
	return true
}

// close stops delivery and takes the device's unacknowledged packets out of
// mochi's inflight store, so that neither a session takeover nor a
// reconnect to a persistent session resends them: the next connection
// replays them from the cursor instead, in order.
func (d *device) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	if d.holdTimer != nil {
		d.holdTimer.Stop()
	}
	if d.parked != nil {
		d.parked = nil
		atomic.AddInt64(&d.h.o.Server.Info.Inflight, -1)
	}
	for pid := range d.inflight {
		if d.cl.State.Inflight.Delete(pid) {
			atomic.AddInt64(&d.h.o.Server.Info.Inflight, -1)
		}
	}
	d.inflight = nil
}

// park takes the delivery with packet id pid out of mochi's inflight map
// while the client's SUBSCRIBE or UNSUBSCRIBE with the same id is
// processed (mochi refuses those when the id is in its map); unpark puts it
// back. The device keeps tracking it: its PUBACK still counts.
func (d *device) park(pid uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ours := d.inflight[pid]; !ours || d.parked != nil {
		return
	}
	if pk, ok := d.cl.State.Inflight.Get(pid); ok && d.cl.State.Inflight.Delete(pid) {
		d.parked = &pk
	}
}

func (d *device) unpark() {
	d.mu.Lock()
	defer d.mu.Unlock()
	pk := d.parked
	d.parked = nil
	if pk == nil {
		return
	}
	if _, still := d.inflight[pk.PacketID]; still && !d.closed {
		d.cl.State.Inflight.Set(*pk)
	} else {
		atomic.AddInt64(&d.h.o.Server.Info.Inflight, -1)
	}
}
