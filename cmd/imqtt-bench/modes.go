package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func progress(w io.Writer, o *options, format string, a ...any) {
	if !o.quiet {
		fmt.Fprintf(w, "imqtt-bench %s: %s\n", o.mode, fmt.Sprintf(format, a...))
	}
}

// inbox is the filter device i subscribes to in idle and storm mode: its IM
// inbox, or a plain topic on a plain broker.
func (o *options) inbox(i int) string {
	if o.anonymous {
		return o.topicPrefix + "idle/" + strconv.Itoa(i)
	}
	return "im/u/" + o.user(i) + "/#"
}

// connectMany connects devices 0..n-1 (client id user+"-d") and subscribes
// each to its inbox, returning the clients (nil where it failed), each
// one's connect+subscribe time, and the failures.
func (o *options) connectMany(cs *clientSet, n, conc int, tokens map[string]string) ([]mqtt.Client, []time.Duration, int, error) {
	clients := make([]mqtt.Client, n)
	lat := make([]time.Duration, n)
	fails, first := forEach(n, conc, func(i int) error {
		t := time.Now()
		me := o.user(i)
		c, err := o.dial(cs, me, me+"-d", true, tokens, func(mqtt.Client, mqtt.Message) {})
		if err != nil {
			return err
		}
		clients[i] = c
		if err := o.subscribe(c, o.inbox(i), 1); err != nil {
			return err
		}
		lat[i] = time.Since(t)
		return nil
	})
	ok := lat[:0]
	for _, d := range lat {
		if d > 0 {
			ok = append(ok, d)
		}
	}
	return clients, ok, fails, first
}

func (o *options) tokensFor(n int) (map[string]string, error) {
	tokens, err := readTokens(o.tokensFile)
	if err != nil {
		return nil, err
	}
	for i := range n {
		if err := needTokens(tokens, o.user(i)); err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// runIdle measures broker memory per idle, subscribed connection.
func runIdle(o *options, stderr io.Writer) (*Result, error) {
	if o.pid <= 0 {
		return nil, errors.New("idle mode needs --pid of the broker")
	}
	tokens, err := o.tokensFor(o.conns)
	if err != nil {
		return nil, err
	}
	res := newResult(o)
	res.Conns, res.Tokens = o.conns, tokens != nil
	bm, err := watch(o.pid)
	if err != nil {
		return nil, err
	}
	cs := &clientSet{}
	progress(stderr, o, "opening %d connections", o.conns)
	t0 := time.Now()
	clients, lat, fails, first := o.connectMany(cs, o.conns, o.concurrency, tokens)
	defer disconnectAll(clients)
	res.Seconds = round(time.Since(t0).Seconds(), 3)
	res.ConnectFailures = fails
	l := summarize(lat)
	res.Connect = &l
	// The broker's heap settles (and its GC returns garbage from the
	// handshakes) after the last connect.
	time.Sleep(o.settle)
	after := bm.rss()
	res.Broker = bm.finish()
	if n := len(lat); n > 0 {
		res.KiBPerConn = round(float64(after-res.Broker.RSSStartKiB)/float64(n), 2)
	}
	res.ConnLost = cs.lost.Load()
	if first != nil {
		res.note("%d connections failed; first: %v", fails, first)
	}
	return res, nil
}

// runStorm connects every device at once and measures until the last one
// is authenticated and subscribed.
func runStorm(o *options, stderr io.Writer) (*Result, error) {
	tokens, err := o.tokensFor(o.conns)
	if err != nil {
		return nil, err
	}
	res := newResult(o)
	res.Conns, res.Tokens = o.conns, tokens != nil
	bm, err := watch(o.pid)
	if err != nil {
		return nil, err
	}
	cs := &clientSet{}
	progress(stderr, o, "%d devices connecting", o.conns)
	t0 := time.Now()
	clients, lat, fails, first := o.connectMany(cs, o.conns, o.concurrency, tokens)
	res.Seconds = round(time.Since(t0).Seconds(), 3)
	res.Broker = bm.finish()
	disconnectAll(clients)
	res.ConnectFailures = fails
	l := summarize(lat)
	res.Connect = &l
	res.ConnLost = cs.lost.Load()
	if first != nil {
		res.note("%d connections failed; first: %v", fails, first)
	}
	return res, nil
}

// runDrain sends a backlog to an offline device, then measures how fast it
// arrives when the device comes back.
func runDrain(o *options, stderr io.Writer) (*Result, error) {
	tokens, err := o.tokensFor(o.publishers + 1)
	if err != nil {
		return nil, err
	}
	res := newResult(o)
	qos := 1
	res.QoS, res.Size, res.Inflight = &qos, o.size, o.inflight
	o.qos = 1
	target := o.user(0)
	cid := target + "-drain"
	cs := &clientSet{}
	t := newTally(o.publishers)

	// A device's first connection starts its backlog at "now" (PROTOCOL.md
	// section 4), so it connects once before going away.
	// Clean sessions: imqtt keeps the backlog per client id whatever the
	// session, and a persistent mochi session would start the backlog
	// before the SUBSCRIBE, whose packet id mochi v2.7.9 then finds "in
	// use" among its own outbound ids (SUBACK 0x91).
	c, err := o.dial(cs, target, cid, true, tokens, func(mqtt.Client, mqtt.Message) {})
	if err != nil {
		return nil, err
	}
	if err := o.subscribe(c, "im/u/"+target+"/#", 1); err != nil {
		c.Disconnect(50)
		return nil, err
	}
	c.Disconnect(250)

	pubs := make([]*requester, o.publishers)
	defer func() {
		for _, p := range pubs {
			if p != nil {
				p.c.Disconnect(50)
			}
		}
	}()
	if _, err := forEach(o.publishers, 50, func(j int) error {
		me := o.user(j + 1)
		r, err := o.newRequester(cs, me, me+"-p", tokens, func(p []byte) { t.response(o.runID, p) })
		pubs[j] = r
		return err
	}); err != nil {
		return nil, fmt.Errorf("publishers: %w", err)
	}
	progress(stderr, o, "sending %d messages to offline %s", o.count, cid)
	start := time.Now()
	var wg sync.WaitGroup
	for j := range o.publishers {
		p := publisher{c: pubs[j].c, stream: j, payload: imPayload, topic: "im/dm/" + target, count: share(o.count, o.publishers, j)}
		if p.count == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.publish(p, t, start, time.Time{})
		}()
	}
	wg.Wait()
	res.Sent, res.Acked = t.sent.Load(), t.acked.Load()
	res.SendPerSec = round(float64(res.Acked)/time.Since(start).Seconds(), 1)
	// Refusals come back after the PUBACK; let them in before counting.
	time.Sleep(100 * time.Millisecond)

	bm, err := watch(o.pid)
	if err != nil {
		return nil, err
	}
	var first atomic.Int64
	handler := func(_ mqtt.Client, m mqtt.Message) {
		if !strings.Contains(m.Topic(), "/dm/") {
			return
		}
		now := time.Now()
		first.CompareAndSwap(0, now.UnixNano())
		d, ok := decodeIM(m.Payload())
		t.deliver(o.runID, d, ok, -1, now)
	}
	progress(stderr, o, "reconnecting %s", cid)
	t0 := time.Now()
	c, err = o.dial(cs, target, cid, true, tokens, handler)
	if err != nil {
		return nil, err
	}
	defer c.Disconnect(50)
	if err := o.subscribe(c, "im/u/"+target+"/#", 1); err != nil {
		return nil, err
	}
	t.waitDelivered(o.drainTimeout)
	res.Broker = bm.finish()
	sendEnd := time.Now()
	t.fill(res, t0, sendEnd)
	res.Latency = nil // send-to-deliver includes the time offline
	res.SendPerSec = round(float64(res.Acked)/t0.Sub(start).Seconds(), 1)
	if f := first.Load(); f > 0 {
		res.FirstMs = round(float64(f-t0.UnixNano())/1e6, 2)
	}
	res.ConnLost = cs.lost.Load()
	if res.Lost > 0 {
		res.note("%d acknowledged messages not drained within --drain-timeout %s (backlog.max_entries may be below --count)", res.Lost, o.drainTimeout)
	}
	return res, nil
}

// runFanout creates a group of o.members online users and measures how long
// each message takes to reach the last of them.
func runFanout(o *options, stderr io.Writer) (*Result, error) {
	k := o.members
	tokens, err := o.tokensFor(k)
	if err != nil {
		return nil, err
	}
	res := newResult(o)
	qos := 1
	o.qos = 1
	res.QoS, res.Size, res.Rate, res.Members = &qos, o.size, o.rate, k
	group := "g" + o.runID
	cs := &clientSet{}
	t := newTally(1)
	n := o.count
	// have[x] counts the members that have message x; lastAt[x] is how long
	// after its sending the last one got it.
	have := make([]atomic.Int32, n)
	lastAt := make([]atomic.Int64, n)
	var recv, uniq, dups, stale, lastRecv atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration

	members := make([]mqtt.Client, k)
	defer disconnectAll(members)
	progress(stderr, o, "connecting %d members", k-1)
	if _, err := forEach(k-1, o.concurrency, func(j int) error {
		me := o.user(j + 1)
		seen := make([]bool, n)
		handler := func(_ mqtt.Client, m mqtt.Message) {
			if !strings.Contains(m.Topic(), "/g/") {
				return
			}
			now := time.Now()
			recv.Add(1)
			d, ok := decodeIM(m.Payload())
			r, _, x, idOK := parseID(d.ID)
			if !ok || !idOK || r != o.runID || x >= n {
				stale.Add(1)
				return
			}
			if seen[x] {
				dups.Add(1)
				return
			}
			seen[x] = true
			uniq.Add(1)
			lastRecv.Store(now.UnixNano())
			l := now.Sub(d.Sent)
			latMu.Lock()
			lat = append(lat, l)
			latMu.Unlock()
			if int(have[x].Add(1)) == k-1 {
				lastAt[x].Store(int64(l))
			}
		}
		c, err := o.dial(cs, me, me+"-f", true, tokens, handler)
		if err != nil {
			return err
		}
		members[j+1] = c
		if err := o.subscribe(c, "im/u/"+me+"/#", 1); err != nil {
			return err
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	sender := o.user(0)
	req, err := o.newRequester(cs, sender, sender+"-f", tokens, func(p []byte) { t.response(o.runID, p) })
	if err != nil {
		return nil, err
	}
	members[0] = req.c
	ids := make([]string, 0, k-1)
	for j := 1; j < k; j++ {
		ids = append(ids, o.user(j))
	}
	if _, err := req.do(map[string]any{"op": "group.create", "group": group, "members": ids}); err != nil {
		return nil, fmt.Errorf("group.create (members must be friends of %s: provision --star %d): %w", sender, k, err)
	}
	bm, err := watch(o.pid)
	if err != nil {
		return nil, err
	}
	progress(stderr, o, "sending %d messages to group %s at %.0f/s", n, group, o.rate)
	start := time.Now()
	o.inflight = max(o.inflight, 16)
	o.publish(publisher{c: req.c, topic: "im/g/" + group, stream: 0, count: n, payload: imPayload, every: time.Duration(float64(time.Second) / o.rate)}, t, start, time.Time{})
	sendEnd := time.Now()
	res.SendPerSec = round(float64(t.acked.Load())/sendEnd.Sub(start).Seconds(), 1)
	deadline := sendEnd.Add(o.drainTimeout)
	for time.Now().Before(deadline) && uniq.Load() < t.acked.Load()*int64(k-1) {
		time.Sleep(20 * time.Millisecond)
	}
	res.Broker = bm.finish()
	res.Sent, res.Acked, res.Refused, res.PubErrors = t.sent.Load(), t.acked.Load(), t.refused.Load(), t.pubErr.Load()
	res.Received, res.Unique, res.Duplicates, res.Stale = recv.Load(), uniq.Load(), dups.Load(), stale.Load()
	var last []time.Duration
	var missing int64
	for x := range n {
		if got := int64(have[x].Load()); got < int64(k-1) {
			missing += int64(k-1) - got
		} else {
			last = append(last, time.Duration(lastAt[x].Load()))
		}
	}
	if res.Acked < int64(n) {
		missing -= (int64(n) - res.Acked) * int64(k-1)
	}
	res.Lost = max(missing, 0)
	lm := summarize(last)
	res.LastMember = &lm
	latMu.Lock()
	all := summarize(lat)
	latMu.Unlock()
	res.Latency = &all
	end := sendEnd
	if l := lastRecv.Load(); l > 0 {
		end = time.Unix(0, l)
	}
	res.Seconds = round(end.Sub(start).Seconds(), 3)
	if s := end.Sub(start).Seconds(); s > 0 {
		res.MsgsPerSec = round(float64(res.Unique)/s, 1)
	}
	res.ConnLost = cs.lost.Load()
	if res.Lost > 0 {
		res.note("%d member deliveries missing after --drain-timeout %s", res.Lost, o.drainTimeout)
	}
	if len(last) < n {
		res.note("last_member covers the %d of %d messages every member got", len(last), n)
	}
	return res, nil
}
