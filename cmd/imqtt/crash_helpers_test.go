package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// crashBuild builds the imqtt binary into dir. `go test` puts its own
// GOROOT/bin first in PATH, so "go" is the toolchain running the test.
func crashBuild(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "imqtt")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// crashFreeAddr returns a loopback address with a port that was free a
// moment ago. The broker binds it again after every kill, so it cannot be
// ":0".
func crashFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// crashCLI runs the binary to completion and fails the test unless it
// exits 0.
func crashCLI(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("imqtt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// crashProc is one run of `imqtt serve`.
type crashProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// crashServe starts `imqtt serve` and waits until its MQTT listener
// accepts connections.
func crashServe(t *testing.T, bin, config, data, addr, logPath string) *crashProc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(bin, "serve", "--config", config, "--data", data, "--mqtt", addr, "--ws", "off", "--http", "off")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start imqtt serve: %v", err)
	}
	p := &crashProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(brokertest.Timeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("imqtt serve exited at start: %v\n%s", p.err, crashTail(logPath))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("imqtt serve not listening on %s after %s\n%s", addr, brokertest.Timeout, crashTail(logPath))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone, so that its
// file lock and port are free.
func (p *crashProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// crashTail returns the end of a log file, for failure messages.
func crashTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// crashMsgID is the message id publisher pub gives its message n.
func crashMsgID(pub string, n int) string { return fmt.Sprintf("%s-%d", pub, n) }

// crashBody is what publishers put in a message's body.
type crashBody struct {
	P string `json:"p"`
	N int    `json:"n"`
}

// crashPublisher sends numbered messages to one recipient at QoS 1 over
// MQTT 3.1.1, pipelined, reconnecting whenever the broker goes away. A
// message counts as acknowledged once its PUBACK arrived; the ones sent but
// not acknowledged when a connection broke are sent again, in order and
// with the same id, on the next one, as an IM client would.
type crashPublisher struct {
	user, addr, to string
	window, limit  int

	mu      sync.Mutex
	next    int          // the next new message number
	pending []int        // sent, not acknowledged, in order
	acked   map[int]bool // PUBACK arrived
	refused []string     // error responses on res: they void the test
	conns   int
}

func newCrashPublisher(user, addr, to string, window, limit int) *crashPublisher {
	return &crashPublisher{user: user, addr: addr, to: to, window: window, limit: limit, next: 1, acked: map[int]bool{}}
}

// run publishes until stop is closed.
func (p *crashPublisher) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := p.connect()
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		p.publish(c, stop)
		c.Disconnect(0)
	}
}

func (p *crashPublisher) connect() (mqtt3.Client, error) {
	opts := mqtt3.NewClientOptions().AddBroker("tcp://" + p.addr).SetClientID(p.user + "-dev").
		SetUsername(p.user).SetPassword("pw-" + p.user).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second).
		SetKeepAlive(30 * time.Second).SetProtocolVersion(4).SetWriteTimeout(2 * time.Second)
	c := mqtt3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %v", p.user, tok.Error())
	}
	// A refused message is still acknowledged on 3.1.1; only its error
	// on res tells. Any refusal would void "acknowledged means stored".
	tok := c.Subscribe("im/u/"+p.user+"/res", 0, func(_ mqtt3.Client, m mqtt3.Message) {
		p.mu.Lock()
		p.refused = append(p.refused, string(m.Payload()))
		p.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %v", p.user, tok.Error())
	}
	p.mu.Lock()
	p.conns++
	p.mu.Unlock()
	return c, nil
}

type crashInflight struct {
	n   int
	tok mqtt3.Token
}

// publish resends what is pending, then sends new messages, until the
// connection breaks or stop is closed.
func (p *crashPublisher) publish(c mqtt3.Client, stop <-chan struct{}) {
	p.mu.Lock()
	queue := append([]int(nil), p.pending...)
	p.mu.Unlock()
	var inflight []crashInflight
	// wait waits for the oldest inflight message; false when the
	// connection broke.
	wait := func() bool {
		f := inflight[0]
		if !f.tok.WaitTimeout(5*time.Second) || f.tok.Error() != nil {
			return false
		}
		inflight = inflight[1:]
		p.mu.Lock()
		p.acked[f.n] = true
		if len(p.pending) > 0 && p.pending[0] == f.n {
			p.pending = p.pending[1:]
		}
		p.mu.Unlock()
		return true
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		if len(inflight) >= p.window {
			if !wait() {
				return
			}
			continue
		}
		var n int
		if len(queue) > 0 {
			n, queue = queue[0], queue[1:]
		} else {
			p.mu.Lock()
			if p.next > p.limit {
				p.mu.Unlock()
				if len(inflight) > 0 && !wait() {
					return
				}
				if len(inflight) == 0 {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
				continue
			}
			n = p.next
			p.next++
			p.pending = append(p.pending, n)
			p.mu.Unlock()
		}
		body, _ := json.Marshal(crashBody{P: p.user, N: n})
		payload := fmt.Sprintf(`{"id":%q,"body":%s}`, crashMsgID(p.user, n), body)
		inflight = append(inflight, crashInflight{n: n, tok: c.Publish("im/dm/"+p.to, 1, false, payload)})
	}
}

// snapshot returns the numbers acknowledged so far and the highest number
// ever sent.
func (p *crashPublisher) snapshot() (acked []int, sent int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := range p.acked {
		acked = append(acked, n)
	}
	return acked, p.next - 1
}

// crashStored opens the store read-only, as after a crash with nothing
// running, checks its consistency and returns, for each publisher, the seq
// of each of its messages numbered up to sent that the store holds. It
// fails the test for any message in acked that the store lacks.
func crashStored(t *testing.T, path, to string, pubs []*crashPublisher) map[string]map[int]uint64 {
	t.Helper()
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open the store read-only after kill -9: %v", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("store check after kill -9: %v", err)
	}
	stored := map[string]map[int]uint64{}
	err = db.View(func(tx storage.Tx) error {
		for _, p := range pubs {
			acked, sent := p.snapshot()
			conv := imqtt.DMConv(p.user, to)
			seqs := map[int]uint64{}
			for n := 1; n <= sent; n++ {
				seq, payload, ok, err := tx.MessageByID(conv, p.user, crashMsgID(p.user, n))
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				var m struct {
					From string    `json:"from"`
					Seq  uint64    `json:"seq"`
					Body crashBody `json:"body"`
				}
				if err := json.Unmarshal(payload, &m); err != nil || m.From != p.user || m.Seq != seq || m.Body != (crashBody{p.user, n}) {
					t.Errorf("stored %s: %s (seq %d, err %v)", crashMsgID(p.user, n), payload, seq, err)
				}
				seqs[n] = seq
			}
			for _, n := range acked {
				if _, ok := seqs[n]; !ok {
					t.Errorf("%s was acknowledged but is not in the store", crashMsgID(p.user, n))
				}
			}
			// Seqs are gapless: the stored messages of the conversation
			// are exactly seqs 1..len.
			have := make([]bool, len(seqs)+1)
			for n, seq := range seqs {
				if seq == 0 || seq > uint64(len(seqs)) || have[seq] {
					t.Errorf("%s: seq %d out of 1..%d or given twice", crashMsgID(p.user, n), seq, len(seqs))
					continue
				}
				have[seq] = true
			}
			stored[p.user] = seqs
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the store: %v", err)
	}
	return stored
}

// errCrashIdle ends a drain that got nothing for a while.
var errCrashIdle = errors.New("no message for a while")

// crashDrain reads c's deliveries until want distinct messages on topics
// under prefix arrived, and returns those deliveries in order. Others
// (events) are skipped.
func crashDrain(c *brokertest.Client, prefix string, want int) ([][]byte, error) {
	var got [][]byte
	distinct := map[string]bool{}
	for len(distinct) < want {
		select {
		case m := <-c.Msgs:
			if !strings.HasPrefix(m.Topic, prefix) {
				continue
			}
			got = append(got, m.Payload)
			var k struct {
				Conv string `json:"conv"`
				Seq  uint64 `json:"seq"`
			}
			if err := json.Unmarshal(m.Payload, &k); err != nil {
				return got, fmt.Errorf("delivery %s: %w", m.Payload, err)
			}
			distinct[fmt.Sprintf("%s/%d", k.Conv, k.Seq)] = true
		case <-time.After(brokertest.Timeout):
			return got, fmt.Errorf("%w: %d of %d distinct messages", errCrashIdle, len(distinct), want)
		}
	}
	return got, nil
}
