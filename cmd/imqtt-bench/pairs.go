package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// stream tracks the messages of one publisher: which were acknowledged,
// refused and received, and the latency of each first delivery.
type stream struct {
	mu      sync.Mutex
	acked   []bool
	refused []bool
	recv    []uint8 // deliveries, saturating
	lat     []time.Duration
}

func (s *stream) grow(n int) {
	for len(s.acked) <= n {
		s.acked = append(s.acked, false)
		s.refused = append(s.refused, false)
		s.recv = append(s.recv, 0)
	}
}

func (s *stream) ack(n int) {
	s.mu.Lock()
	s.grow(n)
	s.acked[n] = true
	s.mu.Unlock()
}

func (s *stream) refuse(n int) {
	s.mu.Lock()
	s.grow(n)
	s.refused[n] = true
	s.mu.Unlock()
}

// got records a delivery of message n and reports whether it was the first.
func (s *stream) got(n int, lat time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grow(n)
	first := s.recv[n] == 0
	if s.recv[n] < 255 {
		s.recv[n]++
	}
	if first {
		s.lat = append(s.lat, lat)
	}
	return first
}

// lost counts messages acknowledged, not refused, never received.
func (s *stream) lost() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for i, a := range s.acked {
		if a && !s.refused[i] && s.recv[i] == 0 {
			n++
		}
	}
	return n
}

// tally holds the counters of a load run.
type tally struct {
	sent, acked, received, unique, dups, stale, refused, pubErr atomic.Int64
	lastRecv                                                    atomic.Int64 // Unix nanoseconds
	codesMu                                                     sync.Mutex
	codes                                                       map[string]int64
	streams                                                     []*stream
}

func newTally(n int) *tally {
	t := &tally{codes: map[string]int64{}, streams: make([]*stream, n)}
	for i := range t.streams {
		t.streams[i] = &stream{}
	}
	return t
}

// deliver records a received message meant to come from stream want (-1:
// any stream of this run).
func (t *tally) deliver(run string, d delivered, ok bool, want int, now time.Time) {
	t.received.Add(1)
	r, s, n, idOK := parseID(d.ID)
	if !ok || !idOK || r != run || s >= len(t.streams) || (want >= 0 && s != want) {
		t.stale.Add(1)
		return
	}
	if t.streams[s].got(n, now.Sub(d.Sent)) {
		t.unique.Add(1)
		t.lastRecv.Store(now.UnixNano())
	} else {
		t.dups.Add(1)
	}
}

// response reads an im/u/{me}/res payload and records a refused message.
func (t *tally) response(run string, p []byte) {
	var r struct {
		ID    string `json:"id"`
		OK    bool   `json:"ok"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(p, &r) != nil || r.OK {
		return
	}
	t.refused.Add(1)
	t.codesMu.Lock()
	t.codes[r.Error.Code]++
	t.codesMu.Unlock()
	if rr, s, n, ok := parseID(r.ID); ok && rr == run && s < len(t.streams) {
		t.streams[s].refuse(n)
	}
}

func (t *tally) lost() int64 {
	var n int64
	for _, s := range t.streams {
		n += s.lost()
	}
	return n
}

func (t *tally) latencies() Latency {
	var all []time.Duration
	for _, s := range t.streams {
		s.mu.Lock()
		all = append(all, s.lat...)
		s.mu.Unlock()
	}
	return summarize(all)
}

// waitDelivered polls until every acknowledged, accepted message was
// received or timeout passes.
func (t *tally) waitDelivered(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if t.unique.Load()+t.refused.Load() >= t.acked.Load() && t.lost() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (t *tally) fill(r *Result, start, sendEnd time.Time) {
	r.Sent, r.Acked, r.Received, r.Unique = t.sent.Load(), t.acked.Load(), t.received.Load(), t.unique.Load()
	r.Duplicates, r.Stale, r.Refused, r.PubErrors = t.dups.Load(), t.stale.Load(), t.refused.Load(), t.pubErr.Load()
	r.Lost = t.lost()
	t.codesMu.Lock()
	if len(t.codes) > 0 {
		r.Codes = t.codes
	}
	t.codesMu.Unlock()
	if s := sendEnd.Sub(start).Seconds(); s > 0 {
		r.SendPerSec = round(float64(r.Acked)/s, 1)
	}
	end := sendEnd
	if last := t.lastRecv.Load(); last > 0 {
		end = time.Unix(0, last)
	}
	if w := end.Sub(start).Seconds(); w > 0 {
		r.Seconds = round(w, 3)
		r.MsgsPerSec = round(float64(r.Unique)/w, 1)
	}
	l := t.latencies()
	r.Latency = &l
}

// publisher sends a share of a run's messages on one connection, keeping at
// most o.inflight unacknowledged.
type publisher struct {
	c      mqtt.Client
	topic  string
	stream int
	count  int // 0: until the deadline
	// every is the pause between sends when paced; offset staggers
	// publishers so paced sends do not come in bursts.
	every, offset time.Duration
	payload       func(id, body string) []byte
}

func (o *options) publish(p publisher, t *tally, start, deadline time.Time) {
	type pending struct {
		tok mqtt.Token
		n   int
	}
	window := make(chan pending, o.inflight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pd := range window {
			if !pd.tok.WaitTimeout(o.connTO) || pd.tok.Error() != nil {
				t.pubErr.Add(1)
				continue
			}
			t.acked.Add(1)
			t.streams[p.stream].ack(pd.n)
		}
	}()
	for n := 0; p.count == 0 || n < p.count; n++ {
		if p.every > 0 {
			if d := time.Until(start.Add(p.offset + time.Duration(n)*p.every)); d > 0 {
				time.Sleep(d)
			}
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			break
		}
		id := msgID(o.runID, p.stream, n)
		tok := p.c.Publish(p.topic, byte(o.qos), false, p.payload(id, makeBody(now, o.size)))
		t.sent.Add(1)
		window <- pending{tok, n}
	}
	close(window)
	<-done
}

// share splits total into n parts that differ by at most one.
func share(total, n, i int) int {
	c := total / n
	if i < total%n {
		c++
	}
	return c
}

// runPairs drives pairs (IM DMs) and raw (plain topics) mode.
func runPairs(o *options, stderr io.Writer) (*Result, error) {
	raw := o.mode == "raw"
	res := newResult(o)
	qos := o.qos
	res.Pairs, res.QoS, res.Size, res.Rate, res.Inflight = o.pairs, &qos, o.size, o.rate, o.inflight
	tokens, err := readTokens(o.tokensFile)
	if err != nil {
		return nil, err
	}
	for i := range 2 * o.pairs {
		if err := needTokens(tokens, o.user(i)); err != nil {
			return nil, err
		}
	}
	t := newTally(o.pairs)
	cs := &clientSet{}
	recvs := make([]mqtt.Client, o.pairs)
	pubs := make([]mqtt.Client, o.pairs)
	defer func() { disconnectAll(pubs); disconnectAll(recvs) }()

	progress(stderr, o, "connecting %d receivers and %d publishers", o.pairs, o.pairs)
	_, err = forEach(o.pairs, 50, func(i int) error {
		me := o.user(2*i + 1)
		handler := func(_ mqtt.Client, m mqtt.Message) {
			now := time.Now()
			if raw {
				d, ok := decodeRaw(m.Payload())
				t.deliver(o.runID, d, ok, i, now)
				return
			}
			if !strings.Contains(m.Topic(), "/dm/") {
				return // events
			}
			d, ok := decodeIM(m.Payload())
			t.deliver(o.runID, d, ok, i, now)
		}
		c, err := o.dial(cs, me, me+"-s", true, tokens, handler)
		if err != nil {
			return err
		}
		recvs[i] = c
		filter := "im/u/" + me + "/#"
		if raw {
			filter = o.topicPrefix + strconv.Itoa(i)
		}
		return o.subscribe(c, filter, byte(o.subQoS))
	})
	if err != nil {
		return nil, fmt.Errorf("receivers: %w", err)
	}
	_, err = forEach(o.pairs, 50, func(i int) error {
		me := o.user(2 * i)
		var handler mqtt.MessageHandler
		if !raw {
			handler = func(_ mqtt.Client, m mqtt.Message) { t.response(o.runID, m.Payload()) }
		}
		c, err := o.dial(cs, me, me+"-p", true, tokens, handler)
		if err != nil {
			return err
		}
		pubs[i] = c
		if raw {
			return nil
		}
		// Errors for refused messages come here; the sender's own copies
		// (im/u/{me}/dm/...) are not subscribed to, as they would only
		// load the publisher.
		return o.subscribe(c, "im/u/"+me+"/res", 0)
	})
	if err != nil {
		return nil, fmt.Errorf("publishers: %w", err)
	}

	bm, err := watch(o.pid)
	if err != nil {
		return nil, err
	}
	self, _ := watch(os.Getpid())
	progress(stderr, o, "sending")
	start := time.Now()
	var deadline time.Time
	if o.duration > 0 {
		deadline = start.Add(o.duration)
	}
	var wg sync.WaitGroup
	for i := range o.pairs {
		p := publisher{c: pubs[i], stream: i, payload: imPayload, topic: "im/dm/" + o.user(2*i+1)}
		if raw {
			p.payload, p.topic = rawPayload, o.topicPrefix+strconv.Itoa(i)
		}
		if o.count > 0 {
			p.count = share(o.count, o.pairs, i)
			if p.count == 0 {
				continue
			}
		}
		if o.rate > 0 {
			p.every = time.Duration(float64(time.Second) * float64(o.pairs) / o.rate)
			p.offset = p.every * time.Duration(i) / time.Duration(o.pairs)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.publish(p, t, start, deadline)
		}()
	}
	wg.Wait()
	sendEnd := time.Now()
	t.waitDelivered(o.drainTimeout)
	res.Broker = bm.finish()
	res.Client = self.finish()
	t.fill(res, start, sendEnd)
	res.ConnLost = cs.lost.Load()
	if res.Lost > 0 {
		res.note("%d acknowledged messages not delivered within --drain-timeout %s", res.Lost, o.drainTimeout)
	}
	if res.ConnLost > 0 {
		res.note("the broker or network ended %d connections during the run", res.ConnLost)
	}
	return res, nil
}
