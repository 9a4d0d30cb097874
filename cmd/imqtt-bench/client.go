package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// minBody is the smallest body: a 19-digit send time in Unix nanoseconds and
// a space.
const minBody = 20

// makeBody returns a body of size bytes that starts with the send time.
func makeBody(sent time.Time, size int) string {
	var b strings.Builder
	b.Grow(size)
	b.WriteString(fmt.Sprintf("%019d ", sent.UnixNano()))
	for b.Len() < size {
		b.WriteByte('x')
	}
	return b.String()
}

// bodyTime returns the send time at the start of a body.
func bodyTime(body string) (time.Time, bool) {
	if len(body) < minBody-1 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(body[:minBody-1], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// msgID names message n of stream s (a pair or a publisher) of run r.
func msgID(run string, s, n int) string { return run + "." + strconv.Itoa(s) + "." + strconv.Itoa(n) }

// parseID splits a msgID; ok is false for an id of another shape.
func parseID(id string) (run string, s, n int, ok bool) {
	run, rest, ok1 := strings.Cut(id, ".")
	ss, ns, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return "", 0, 0, false
	}
	s, err1 := strconv.Atoi(ss)
	n, err2 := strconv.Atoi(ns)
	if err1 != nil || err2 != nil || s < 0 || n < 0 {
		return "", 0, 0, false
	}
	return run, s, n, true
}

// imPayload is a message payload of PROTOCOL.md section 3.
func imPayload(id, body string) []byte {
	b, _ := json.Marshal(struct {
		ID   string `json:"id"`
		Body string `json:"body"`
	}{id, body})
	return b
}

// rawPayload is a plain MQTT payload: the id, a space, the body.
func rawPayload(id, body string) []byte { return []byte(id + " " + body) }

// delivered is what a receiver needs from a message.
type delivered struct {
	ID   string
	Sent time.Time
}

// decodeIM reads a delivered message of PROTOCOL.md section 4.
func decodeIM(p []byte) (delivered, bool) {
	var m struct {
		ID   string `json:"id"`
		Body string `json:"body"`
	}
	if err := json.Unmarshal(p, &m); err != nil {
		return delivered{}, false
	}
	t, ok := bodyTime(m.Body)
	return delivered{ID: m.ID, Sent: t}, ok
}

// decodeRaw reads a rawPayload.
func decodeRaw(p []byte) (delivered, bool) {
	id, body, ok := strings.Cut(string(p), " ")
	if !ok {
		return delivered{}, false
	}
	t, ok := bodyTime(body)
	return delivered{ID: id, Sent: t}, ok
}

// clientSet counts what happens to the connections of a run.
type clientSet struct {
	lost atomic.Int64 // connections the broker or network ended
}

// dial connects user with clientID (MQTT 3.1.1). onMsg may be nil.
func (o *options) dial(cs *clientSet, user, clientID string, clean bool, tokens map[string]string, onMsg mqtt.MessageHandler) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + o.addr).SetClientID(clientID).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(o.keepalive).SetConnectTimeout(o.connTO).SetWriteTimeout(o.connTO).
		SetOrderMatters(true).SetProtocolVersion(4).SetMessageChannelDepth(1000)
	if !o.anonymous {
		opts.SetUsername(user).SetPassword(o.password(user, tokens))
	}
	if cs != nil {
		opts.SetConnectionLostHandler(func(mqtt.Client, error) { cs.lost.Add(1) })
	}
	if onMsg != nil {
		opts.SetDefaultPublishHandler(onMsg)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(o.connTO) {
		return nil, fmt.Errorf("connect %s: timed out after %s", clientID, o.connTO)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	return c, nil
}

// subscribe subscribes c to filter and checks the SUBACK.
func (o *options) subscribe(c mqtt.Client, filter string, qos byte) error {
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(o.connTO) {
		return fmt.Errorf("subscribe %s: timed out", filter)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[filter]; code >= 0x80 {
		return fmt.Errorf("subscribe %s: refused (0x%02x)", filter, code)
	}
	return nil
}

// disconnectAll closes clients concurrently, at most 500 at a time.
func disconnectAll(cs []mqtt.Client) {
	_, _ = forEach(len(cs), 500, func(i int) error {
		if cs[i] != nil {
			cs[i].Disconnect(50)
		}
		return nil
	})
}

// forEach runs fn(0..n-1) with at most conc running at once (0: all at
// once) and returns how many failed and the first error.
func forEach(n, conc int, fn func(i int) error) (int, error) {
	if conc <= 0 || conc > n {
		conc = n
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails int
		first error
		next  atomic.Int64
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					fails++
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return fails, first
}

// readTokens reads "user token" lines.
func readTokens(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		u, tok, ok := strings.Cut(t, " ")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"user token\"", path, line)
		}
		m[u] = strings.TrimSpace(tok)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	return m, nil
}

// needTokens checks that every user of ids has a token.
func needTokens(tokens map[string]string, ids ...string) error {
	if tokens == nil {
		return nil
	}
	for _, id := range ids {
		if tokens[id] == "" {
			return errors.New("no token for user " + id + " in --tokens file")
		}
	}
	return nil
}

// response is a PROTOCOL.md section 5 response.
type response struct {
	RID   string          `json:"rid"`
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// requester makes requests on im/req and matches responses by rid.
type requester struct {
	o       *options
	me      string
	c       mqtt.Client
	mu      sync.Mutex
	n       int
	waiting map[string]chan response
	// other receives responses to no pending request (errors for
	// refused messages); may be nil.
	other func(p []byte)
}

func (r *requester) onRes(_ mqtt.Client, m mqtt.Message) {
	var res response
	if json.Unmarshal(m.Payload(), &res) == nil && res.RID != "" {
		r.mu.Lock()
		ch := r.waiting[res.RID]
		delete(r.waiting, res.RID)
		r.mu.Unlock()
		if ch != nil {
			ch <- res
			return
		}
	}
	if r.other != nil {
		r.other(m.Payload())
	}
}

// newRequester connects user me with clientID and subscribes to its
// response topic.
func (o *options) newRequester(cs *clientSet, me, clientID string, tokens map[string]string, other func([]byte)) (*requester, error) {
	r := &requester{o: o, me: me, waiting: map[string]chan response{}, other: other}
	c, err := o.dial(cs, me, clientID, true, tokens, r.onRes)
	if err != nil {
		return nil, err
	}
	r.c = c
	if err := o.subscribe(c, "im/u/"+me+"/res", 1); err != nil {
		c.Disconnect(50)
		return nil, err
	}
	return r, nil
}

// do sends a request (req gets a rid) and waits for its response; a refused
// request is an error naming its code.
func (r *requester) do(req map[string]any) (response, error) {
	r.mu.Lock()
	r.n++
	rid := fmt.Sprintf("%s-%d", r.o.runID, r.n)
	ch := make(chan response, 1)
	r.waiting[rid] = ch
	r.mu.Unlock()
	req["rid"] = rid
	b, _ := json.Marshal(req)
	tok := r.c.Publish("im/req", 1, false, b)
	if !tok.WaitTimeout(r.o.connTO) || tok.Error() != nil {
		return response{}, fmt.Errorf("%s %v: publish failed: %v", r.me, req["op"], tok.Error())
	}
	select {
	case res := <-ch:
		if !res.OK {
			return res, fmt.Errorf("%s %v: %s: %s", r.me, req["op"], res.Error.Code, res.Error.Message)
		}
		return res, nil
	case <-time.After(r.o.connTO):
		r.mu.Lock()
		delete(r.waiting, rid)
		r.mu.Unlock()
		return response{}, fmt.Errorf("%s %v: no response within %s", r.me, req["op"], r.o.connTO)
	}
}
