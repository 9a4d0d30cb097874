package broker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
)

// benchStart starts a broker for benchmarks: quiet, with rate limits out
// of the way.
func imBenchStart(b *testing.B) *brokertest.B {
	b.Helper()
	return brokertest.Start(b, func(c *broker.Config) {
		c.Limits.MessagesPerSecond = 1e6
		c.Limits.RequestsPerSecond = 1e6
		c.Log.Level = "error"
	})
}

// benchUsers creates users and makes the first a friend of every other,
// through the store.
func imBenchUsers(b *testing.B, br *brokertest.B, users []string) {
	b.Helper()
	br.Users(users...)
	err := br.Store().Update(func(tx storage.Tx) error {
		for _, u := range users[1:] {
			if err := tx.SetFriends(users[0], u, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// percentile returns the p-th percentile (0-100) of sorted durations.
func imPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// BenchmarkGroupFanout500 measures a message to a 500-member group with
// every member online (Paho 3.1.1 clients subscribed at QoS 1): the time
// from the sender's publish until the last member (the sender's own copy
// included) has it. One op is one message, sent after the previous one
// reached everybody. Setup takes several seconds, so give a count:
//
//	go test -run '^$' -bench BenchmarkGroupFanout500 -benchtime 200x ./broker/
func BenchmarkGroupFanout500(b *testing.B) {
	const members = 500
	br := imBenchStart(b)
	users := make([]string, members)
	for i := range users {
		users[i] = fmt.Sprintf("m%03d", i)
	}
	imBenchUsers(b, br, users)

	n := b.N
	got := make([]atomic.Int32, n+1)
	last := make([]atomic.Int64, n+1) // unix nanos of the latest copy
	done := make(chan int, n+1)
	seqKey := []byte(`"seq":`)
	clients := make([]mqtt3.Client, members)
	var wg sync.WaitGroup
	errs := make(chan error, members)
	sem := make(chan struct{}, 16)
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			topic := "im/u/" + u + "/g/big"
			opts := mqtt3.NewClientOptions().AddBroker("tcp://" + br.Addr("mqtt")).SetClientID(u + "-dev").
				SetUsername(u).SetPassword("pw-" + u).SetAutoReconnect(false).SetConnectRetry(false).
				SetKeepAlive(60 * time.Second).SetProtocolVersion(4).SetOrderMatters(false)
			opts.SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
				if m.Topic() != topic {
					return
				}
				p := m.Payload()
				k := bytes.Index(p, seqKey)
				if k < 0 {
					return
				}
				e := bytes.IndexByte(p[k+len(seqKey):], ',')
				seq, err := strconv.Atoi(string(p[k+len(seqKey) : k+len(seqKey)+e]))
				if err != nil || seq < 1 || seq > n {
					return
				}
				now := time.Now().UnixNano()
				for {
					old := last[seq].Load()
					if now <= old || last[seq].CompareAndSwap(old, now) {
						break
					}
				}
				if got[seq].Add(1) == members {
					done <- seq
				}
			})
			c := mqtt3.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(brokertest.Timeout) || tok.Error() != nil {
				errs <- fmt.Errorf("connect %s: %v", u, tok.Error())
				return
			}
			if tok := c.Subscribe("im/u/"+u+"/#", 1, nil); !tok.WaitTimeout(brokertest.Timeout) || tok.Error() != nil {
				errs <- fmt.Errorf("subscribe %s: %v", u, tok.Error())
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	sender := clients[0]
	create, _ := json.Marshal(map[string]any{"rid": "c", "op": "group.create", "group": "big", "members": users[1:]})
	if tok := sender.Publish("im/req", 1, false, create); !tok.WaitTimeout(brokertest.Timeout) || tok.Error() != nil {
		b.Fatal("group.create:", tok.Error())
	}
	// The broker handles one connection's publishes in order: the group
	// exists before the first message is looked at.
	lat := make([]time.Duration, 0, n)
	payload := []byte(`{"body":"a message to the whole group, about this long"}`)
	b.ResetTimer()
	for i := 1; i <= n; i++ {
		start := time.Now()
		tok := sender.Publish("im/g/big", 1, false, payload)
		if !tok.WaitTimeout(brokertest.Timeout) || tok.Error() != nil {
			b.Fatalf("publish %d: %v", i, tok.Error())
		}
		select {
		case seq := <-done:
			if seq != i {
				b.Fatalf("message %d reached everyone before message %d", seq, i)
			}
		case <-time.After(brokertest.Timeout):
			b.Fatalf("message %d reached %d of %d members", i, got[i].Load(), members)
		}
		lat = append(lat, time.Duration(last[i].Load()-start.UnixNano()))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(imPercentile(lat, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(imPercentile(lat, 99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// imNopNotifier is a chat.Notifier for a Service that only reads.
type imNopNotifier struct{}

func (imNopNotifier) Appended(...string)       {}
func (imNopNotifier) Transient(string, []byte) {}
func (imNopNotifier) Online(string) bool       { return false }

// seedDM stores n messages of about 100 bytes in the DM of alice and bob,
// straight into the store (the write path is not what is measured).
func imSeedDM(b *testing.B, br *brokertest.B, n int) {
	b.Helper()
	conv := imqtt.DMConv("alice", "bob")
	body := json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), 60)) + `"`)
	for done := 0; done < n; {
		batch := min(n-done, 20000)
		err := br.Store().Update(func(tx storage.Tx) error {
			for i := range batch {
				m := imqtt.Message{Conv: conv, ID: fmt.Sprintf("m%d", done+i), From: "alice", TS: time.Now().UnixMilli(), Type: "text", Body: body}
				if _, err := tx.AppendMessage(conv, "alice", m.ID, m.TS, func(seq uint64) []byte {
					m.Seq = seq
					return m.Encode()
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		done += batch
	}
	// Both users' conversation states, as a sent DM leaves them: without
	// one, a user counts as joined at the last seq and reads nothing.
	err := br.Store().Update(func(tx storage.Tx) error {
		for _, u := range []string{"alice", "bob"} {
			if err := tx.PutConvState(u, storage.ConvState{Conv: conv, TS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHistory measures what history requests cost in memory over a
// DM of 10,000 (and 100,000) messages. B/op is the bytes allocated per
// op, in the whole process (runtime.MemStats.TotalAlloc): for "mqtt" the
// broker and the test's MQTT client together, for "service" only the
// request's handling (decoding, the store read, encoding the response).
// "page" is one request with limit 500, "walk" the 20 requests with limit
// 500 that page backwards through 10,000 messages.
//
//	go test -run '^$' -bench BenchmarkHistory -benchmem ./broker/
func BenchmarkHistory(b *testing.B) {
	for _, logSize := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("log=%d", logSize), func(b *testing.B) {
			br := imBenchStart(b)
			br.Users("alice", "bob")
			br.MakeFriends(b, "alice", "bob")
			imSeedDM(b, br, logSize)
			svc := chat.New(chat.Options{Store: br.Store(), Notifier: imNopNotifier{}, DMPolicy: acl.DMFriends, MaxPayload: 64 << 10})
			c, err := br.Dial(brokertest.Opts{User: "alice", Password: "pw-alice", ClientID: "alice-bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if code, err := c.Subscribe("im/u/alice/res", 1); err != nil || code != 1 {
				b.Fatalf("subscribe: 0x%02x %v", code, err)
			}
			viaMQTT := func(before int) int {
				p := fmt.Appendf(nil, `{"rid":"h","op":"history","conv":"dm:alice:bob","limit":500,"before":%d}`, before)
				if _, err := c.Publish("im/req", 1, p); err != nil {
					b.Fatal(err)
				}
				select {
				case m := <-c.Msgs:
					return len(m.Payload)
				case <-time.After(brokertest.Timeout):
					b.Fatal("no history response")
					return 0
				}
			}
			viaService := func(before int) int {
				p := fmt.Appendf(nil, `{"rid":"h","op":"history","conv":"dm:alice:bob","limit":500,"before":%d}`, before)
				resp, _, code := svc.Request(chat.Caller{User: "alice", ClientID: "alice-bench"}, p)
				if code != "" {
					b.Fatalf("history: %s", resp)
				}
				return len(resp)
			}
			for _, via := range []struct {
				name string
				ask  func(before int) int
			}{{"mqtt", viaMQTT}, {"service", viaService}} {
				b.Run(via.name+"/page", func(b *testing.B) {
					b.ReportAllocs()
					var size int
					for b.Loop() {
						size = via.ask(logSize + 1)
					}
					b.ReportMetric(float64(size), "resp-bytes")
				})
				b.Run(via.name+"/walk", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						for p := range 20 {
							via.ask(logSize + 1 - p*500)
						}
					}
				})
			}
		})
	}
}
