package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

var (
	crashCycles = flag.Int("crash.cycles", 5, "kill -9 cycles in TestCrash/Kill9Loop")
	crashSeed   = flag.Uint64("crash.seed", 0, "seed for TestCrash/Kill9Loop's kill times (0: random)")
)

// crashConfig is the broker configuration of the crash test: the recipient's
// backlog must hold everything the publishers send, and rate limits would
// refuse (and, on 3.1.1, still acknowledge) messages.
const crashConfig = `backlog:
  max_entries: 10000000
limits:
  messages_per_second: 1000000
  connections_per_user: 100
log:
  level: warn
  format: json
`

// crashEnv is a data directory prepared for the broker binary: users made
// through the CLI, friendships written straight into the store, all before
// the broker runs.
type crashEnv struct {
	bin, data, config, logPath, addr, storePath string
	recipient, device                           string
	pubs                                        []*crashPublisher
}

func crashSetup(t *testing.T, bin string, publishers int) *crashEnv {
	t.Helper()
	dir := t.TempDir()
	e := &crashEnv{
		bin: bin, data: filepath.Join(dir, "data"), config: filepath.Join(dir, "imqtt.yaml"),
		logPath: filepath.Join(dir, "broker.log"), addr: crashFreeAddr(t),
		recipient: "rcpt", device: "rcpt-phone",
	}
	e.storePath = filepath.Join(e.data, bolt.FileName)
	if err := os.WriteFile(e.config, []byte(crashConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	users := []string{e.recipient}
	for i := range publishers {
		p := newCrashPublisher(fmt.Sprintf("p%d", i), e.addr, e.recipient, 8, 1000000)
		e.pubs = append(e.pubs, p)
		users = append(users, p.user)
	}
	for _, u := range users {
		crashCLI(t, bin, "user", "add", u, "--password", "pw-"+u, "--data", e.data)
	}
	db, err := bolt.OpenDir(e.data, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx storage.Tx) error {
		for _, p := range e.pubs {
			if err := tx.SetFriends(p.user, e.recipient, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// serve starts the broker on e.
func (e *crashEnv) serve(t *testing.T) *crashProc {
	t.Helper()
	return crashServe(t, e.bin, e.config, e.data, e.addr, e.logPath)
}

// connectDevice connects the recipient's device and subscribes it.
func (e *crashEnv) connectDevice(t *testing.T) *brokertest.Client {
	t.Helper()
	c, err := brokertest.Dial(e.addr, brokertest.Opts{User: e.recipient, Password: "pw-" + e.recipient, ClientID: e.device})
	if err != nil {
		t.Fatalf("device connect: %v\n%s", err, crashTail(e.logPath))
	}
	if code, err := c.Subscribe("im/u/"+e.recipient+"/#", 1); err != nil || code != 1 {
		c.Close()
		t.Fatalf("device subscribe: 0x%02x %v", code, err)
	}
	return c
}

// startPublishers runs e's publishers until the returned stop is called.
func (e *crashEnv) startPublishers(t *testing.T) (stop func()) {
	stopc := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range e.pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(stopc) }()
	}
	stop = sync.OnceFunc(func() { close(stopc); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

// checkNoRefusals fails the test if a publisher had a message refused: on
// 3.1.1 a refused message is acknowledged too, so "acknowledged" would no
// longer mean "accepted".
func (e *crashEnv) checkNoRefusals(t *testing.T) {
	t.Helper()
	for _, p := range e.pubs {
		p.mu.Lock()
		refused := p.refused
		p.mu.Unlock()
		if len(refused) > 0 {
			t.Fatalf("%s had %d messages refused, which voids the test; first: %s", p.user, len(refused), refused[0])
		}
	}
}

// connections returns how many connections each publisher has made.
func (e *crashEnv) connections() []int {
	out := make([]int, len(e.pubs))
	for i, p := range e.pubs {
		p.mu.Lock()
		out[i] = p.conns
		p.mu.Unlock()
	}
	return out
}

// waitPublishersConnected waits until every publisher has connected since
// connections returned before.
func (e *crashEnv) waitPublishersConnected(t *testing.T, before []int) {
	t.Helper()
	brokertest.Eventually(t, "publishers reconnected", func() bool {
		for i, n := range e.connections() {
			if n <= before[i] {
				return false
			}
		}
		return true
	})
}

// TestCrash builds the imqtt binary once and runs the kill -9 tests on it.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 tests with the real binary: skipped with -short")
	}
	bin := crashBuild(t, t.TempDir())
	t.Run("AckedOnDiskAfterKill9", func(t *testing.T) { crashAckedOnDisk(t, bin) })
	t.Run("Kill9Loop", func(t *testing.T) { crashKill9Loop(t, bin) })
}

// crashAckedOnDisk checks that an acknowledgement means the message is on
// disk: publishers send at full speed, the broker is killed with SIGKILL
// at a random moment, and a read-only open of the store, with nothing
// running, must hold every message whose PUBACK arrived.
func crashAckedOnDisk(t *testing.T, bin string) {
	e := crashSetup(t, bin, 4)
	proc := e.serve(t)
	stop := e.startPublishers(t)
	// Kill under full flow: once every publisher has had acknowledgements.
	brokertest.Eventually(t, "every publisher acknowledged", func() bool {
		for _, p := range e.pubs {
			if a, _ := p.snapshot(); len(a) < 50 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	proc.kill()
	stop()
	e.checkNoRefusals(t)
	stored := crashStored(t, e.storePath, e.recipient, e.pubs)
	acked, sent, n := 0, 0, 0
	for _, p := range e.pubs {
		a, s := p.snapshot()
		acked += len(a)
		sent += s
		n += len(stored[p.user])
	}
	t.Logf("killed with %d messages sent, %d acknowledged, %d in the store", sent, acked, n)
}

// crashKill9Loop has publishers send numbered messages to a recipient whose
// device is offline, kills the broker with SIGKILL at random moments and
// restarts it (-crash.cycles times), checks the store after every kill,
// then proves that every message whose PUBACK arrived is delivered to the
// device when it comes back, per publisher in the order sent.
func crashKill9Loop(t *testing.T, bin string) {
	seed := *crashSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (-crash.seed to repeat), %d cycles", seed, *crashCycles)
	rng := rand.New(rand.NewPCG(seed, seed))
	e := crashSetup(t, bin, 4)
	pubs := e.pubs

	// The device connects once, so that it is known and its backlog
	// starts here, then stays away through every crash.
	proc := e.serve(t)
	e.connectDevice(t).Close()
	stopPublishers := e.startPublishers(t)
	conns := e.connections()

	var stored map[string]map[int]uint64
	for cycle := 1; cycle <= *crashCycles; cycle++ {
		if cycle > 1 {
			proc = e.serve(t)
		}
		// Mostly under full flow, once every publisher is back; now and
		// then while they are still logging in.
		when := "while publishers connect"
		if rng.IntN(5) > 0 {
			when = "under full flow"
			e.waitPublishersConnected(t, conns)
			time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		} else {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		proc.kill()
		conns = e.connections()
		if cycle == *crashCycles {
			// Nothing more may be acknowledged: the last check below
			// sees every PUBACK there ever was.
			stopPublishers()
		}
		stored = crashStored(t, e.storePath, e.recipient, pubs)
		if t.Failed() {
			t.Fatalf("cycle %d: acknowledged messages missing from the store after kill -9\n%s", cycle, crashTail(e.logPath))
		}
		n := 0
		for _, s := range stored {
			n += len(s)
		}
		t.Logf("cycle %d: killed %s; %d messages in the store", cycle, when, n)
	}
	e.checkNoRefusals(t)

	// The device comes back to a restarted broker and drains.
	e.serve(t)
	want := 0
	for _, s := range stored {
		want += len(s)
	}
	dev := e.connectDevice(t)
	defer dev.Close()
	got, err := crashDrain(dev, "im/u/"+e.recipient+"/dm/", want)
	if err != nil {
		t.Fatalf("drain: %v\n%s", err, crashTail(e.logPath))
	}

	// Every acknowledged message delivered; per publisher in the order
	// sent; per conversation seq gapless and increasing.
	type key struct {
		pub string
		n   int
	}
	deliveries := map[key]int{}
	lastN := map[string]int{}
	lastSeq := map[string]uint64{}
	redelivered, reordered := 0, 0
	for _, raw := range got {
		var m struct {
			Conv string    `json:"conv"`
			Seq  uint64    `json:"seq"`
			ID   string    `json:"id"`
			From string    `json:"from"`
			Body crashBody `json:"body"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("delivery %s: %v", raw, err)
		}
		if m.From != m.Body.P || m.ID != crashMsgID(m.Body.P, m.Body.N) {
			t.Fatalf("delivery does not match what was sent: %s", raw)
		}
		if want := stored[m.From][m.Body.N]; m.Seq != want {
			t.Errorf("%s delivered with seq %d, stored with %d", m.ID, m.Seq, want)
		}
		k := key{m.From, m.Body.N}
		deliveries[k]++
		switch {
		case m.Seq == lastSeq[m.Conv]+1:
		case m.Seq <= lastSeq[m.Conv]:
			redelivered++
			continue
		default:
			t.Errorf("%s: seq %d after %d: a gap", m.Conv, m.Seq, lastSeq[m.Conv])
		}
		lastSeq[m.Conv] = m.Seq
		if m.Body.N < lastN[m.From] {
			reordered++
			t.Errorf("%s delivered after %s", m.ID, crashMsgID(m.From, lastN[m.From]))
		}
		lastN[m.From] = m.Body.N
	}
	acked, sent, unackedDelivered, dups := 0, 0, 0, 0
	for _, p := range pubs {
		a, s := p.snapshot()
		acked += len(a)
		sent += s
		ackedSet := map[int]bool{}
		for _, n := range a {
			ackedSet[n] = true
			if deliveries[key{p.user, n}] == 0 {
				t.Errorf("%s was acknowledged but never delivered", crashMsgID(p.user, n))
			}
		}
		for n := 1; n <= s; n++ {
			c := deliveries[key{p.user, n}]
			if c > 1 {
				dups += c - 1
			}
			if c > 0 && !ackedSet[n] {
				unackedDelivered++
			}
		}
	}
	t.Logf("%d cycles: %d messages sent, %d acknowledged, %d stored, %d deliveries; "+
		"duplicates %d (redelivered %d), delivered without an acknowledgement %d, reordered %d",
		*crashCycles, sent, acked, want, len(got), dups, redelivered, unackedDelivered, reordered)
	if acked == 0 {
		t.Fatalf("no message was ever acknowledged: the test proved nothing\n%s", crashTail(e.logPath))
	}
}
