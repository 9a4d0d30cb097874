package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

// fixture is an in-process broker on a store provisioned by the tool.
type fixture struct {
	b      *brokertest.B
	tokens string // tokens file, "" if none
}

// start provisions a store with the tool, then starts a broker on it with
// limits high enough for a load and open_topics bench/#.
func start(t testing.TB, users, star int, tokens bool, mod func(*broker.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	args := []string{"provision", "--provision-store", dir, "--users", strconv.Itoa(users), "--star", strconv.Itoa(star)}
	f := &fixture{}
	if tokens {
		f.tokens = filepath.Join(dir, "tokens")
		args = append(args, "--tokens-out", f.tokens)
	}
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("provision: exit %d: %s", code, errb.String())
	}
	f.b = brokertest.StartIn(t, dir, func(c *broker.Config) {
		c.OpenTopics = []string{"bench/#"}
		c.Limits.MessagesPerSecond = 1e6
		c.Limits.RequestsPerSecond = 1e6
		c.Backlog.MaxEntries = 1000000
		if mod != nil {
			mod(c)
		}
	})
	return f
}

// bench runs the tool against the fixture's broker and returns the result
// of its JSON line.
func (f *fixture) bench(t testing.TB, args ...string) *Result {
	t.Helper()
	args = append(args, "--addr", f.b.Addr("mqtt"), "--pid", strconv.Itoa(os.Getpid()))
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, errb.String())
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	var r Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("first line is not a result: %v: %q", err, line)
	}
	if !slices.Contains(args, "--quiet") && !strings.Contains(out.String(), r.headline()) {
		t.Errorf("summary lacks the headline %q:\n%s", r.headline(), out.String())
	}
	return &r
}

func checkClean(t *testing.T, r *Result, want int64) {
	t.Helper()
	if r.Acked != want || r.Unique != want || r.Lost != 0 || r.Duplicates != 0 || r.Stale != 0 || r.Refused != 0 {
		t.Errorf("want %d acked and delivered once, got acked %d unique %d lost %d dup %d stale %d refused %d %v (notes %v)",
			want, r.Acked, r.Unique, r.Lost, r.Duplicates, r.Stale, r.Refused, r.Codes, r.Notes)
	}
	if r.Broker == nil || r.Broker.PID != os.Getpid() {
		t.Errorf("broker figures missing: %+v", r.Broker)
	}
}

func TestPairsAndRaw(t *testing.T) {
	f := start(t, 6, 0, false, nil)
	tests := []struct {
		name string
		args []string
		want int64
	}{
		{"im qos1 count", []string{"pairs", "--pairs", "3", "--count", "60"}, 60},
		{"im qos0 paced", []string{"pairs", "--pairs", "2", "--count", "20", "--qos", "0", "--rate", "2000", "--size", "64"}, 20},
		{"raw qos1", []string{"raw", "--pairs", "3", "--count", "45", "--inflight", "4"}, 45},
		{"raw qos0 sub qos0", []string{"raw", "--pairs", "1", "--count", "10", "--qos", "0", "--sub-qos", "0"}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.bench(t, tt.args...)
			checkClean(t, r, tt.want)
			if r.Latency == nil || r.Latency.N != int(tt.want) || r.Latency.P50 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max {
				t.Errorf("latency: %+v", r.Latency)
			}
			if r.MsgsPerSec <= 0 {
				t.Errorf("msgs_per_sec %v", r.MsgsPerSec)
			}
		})
	}
}

func TestPairsDuration(t *testing.T) {
	f := start(t, 2, 0, false, nil)
	r := f.bench(t, "pairs", "--pairs", "1", "--duration", "200ms", "--rate", "50")
	if r.Sent < 1 || r.Sent > 20 {
		t.Errorf("sent %d in 200ms at 50/s", r.Sent)
	}
	checkClean(t, r, r.Sent)
}

// A refused message is acknowledged but not delivered; the tool counts it
// as refused with its code, not as lost.
func TestPairsCountsRefusals(t *testing.T) {
	f := start(t, 2, 0, false, func(c *broker.Config) { c.Limits.MessagesPerSecond = 1 })
	r := f.bench(t, "pairs", "--pairs", "1", "--count", "12", "--inflight", "1", "--drain-timeout", "2s")
	if r.Refused == 0 || r.Codes["rate_limited"] != r.Refused {
		t.Fatalf("want rate_limited refusals, got %d %v", r.Refused, r.Codes)
	}
	if r.Lost != 0 || r.Unique+r.Refused != r.Acked {
		t.Errorf("unique %d + refused %d != acked %d (lost %d)", r.Unique, r.Refused, r.Acked, r.Lost)
	}
}

// Messages of another run left in a device's backlog are stale, not
// duplicates or deliveries of this run.
func TestPairsStaleBacklog(t *testing.T) {
	f := start(t, 2, 0, false, nil)
	// The receiver's device connects once, then goes; a message arrives
	// for it meanwhile.
	rcv, err := f.b.Dial(brokertest.Opts{User: "b1", Password: "pw-b1", ClientID: "b1-s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rcv.Subscribe("im/u/b1/#", 1); err != nil {
		t.Fatal(err)
	}
	rcv.Close()
	snd := f.b.Connect(t, "b0", false)
	if _, err := snd.Publish("im/dm/b1", 1, []byte(`{"id":"old.0.0","body":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	r := f.bench(t, "pairs", "--pairs", "1", "--count", "5")
	checkStaleOne(t, r)
}

func checkStaleOne(t *testing.T, r *Result) {
	t.Helper()
	if r.Stale != 1 || r.Unique != 5 || r.Lost != 0 || r.Duplicates != 0 {
		t.Errorf("want 1 stale and 5 clean deliveries, got stale %d unique %d lost %d dup %d", r.Stale, r.Unique, r.Lost, r.Duplicates)
	}
}

func TestDrain(t *testing.T) {
	f := start(t, 4, 4, false, nil)
	r := f.bench(t, "drain", "--count", "90", "--publishers", "3")
	checkClean(t, r, 90)
	if r.MsgsPerSec <= 0 || r.FirstMs <= 0 || r.Latency != nil {
		t.Errorf("drain figures: msgs_per_sec %v first_ms %v latency %+v", r.MsgsPerSec, r.FirstMs, r.Latency)
	}
}

func TestFanout(t *testing.T) {
	f := start(t, 6, 6, false, nil)
	r := f.bench(t, "fanout", "--members", "6", "--count", "8", "--rate", "200")
	if r.Acked != 8 || r.Unique != 8*5 || r.Lost != 0 || r.Duplicates != 0 {
		t.Errorf("want 8 messages to 5 members, got acked %d unique %d lost %d dup %d (notes %v)", r.Acked, r.Unique, r.Lost, r.Duplicates, r.Notes)
	}
	if r.LastMember == nil || r.LastMember.N != 8 || r.Latency == nil || r.Latency.N != 40 {
		t.Errorf("last_member %+v latency %+v", r.LastMember, r.Latency)
	}
	if r.LastMember.Max < r.Latency.P50 {
		t.Errorf("the last member (max %.3f ms) cannot be faster than the median delivery (%.3f ms)", r.LastMember.Max, r.Latency.P50)
	}
}

// Without a friendship the group cannot be created, and the tool says why.
func TestFanoutNeedsStar(t *testing.T) {
	f := start(t, 4, 0, false, nil)
	var out, errb bytes.Buffer
	code := run([]string{"fanout", "--addr", f.b.Addr("mqtt"), "--members", "4", "--count", "1"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "not_friends") || !strings.Contains(errb.String(), "--star 4") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestStormAndIdle(t *testing.T) {
	f := start(t, 8, 0, true, nil)
	tests := []struct {
		name   string
		args   []string
		tokens bool
	}{
		{"storm passwords", []string{"storm", "--conns", "8"}, false},
		{"storm tokens", []string{"storm", "--conns", "8", "--tokens", f.tokens}, true},
		{"idle tokens", []string{"idle", "--conns", "8", "--tokens", f.tokens, "--concurrency", "3", "--settle", "0s"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.bench(t, tt.args...)
			if r.Conns != 8 || r.ConnectFailures != 0 || r.Tokens != tt.tokens || r.Connect == nil || r.Connect.N != 8 {
				t.Errorf("conns %d failures %d tokens %v connect %+v notes %v", r.Conns, r.ConnectFailures, r.Tokens, r.Connect, r.Notes)
			}
			if r.Broker == nil || r.Broker.RSSStartKiB <= 0 {
				t.Errorf("broker figures: %+v", r.Broker)
			}
		})
	}
}

// A wrong token must fail the connect: the storm reports it rather than
// passing silently.
func TestStormBadToken(t *testing.T) {
	f := start(t, 2, 0, true, nil)
	bad := filepath.Join(t.TempDir(), "tokens")
	data, err := os.ReadFile(f.tokens)
	if err != nil {
		t.Fatal(err)
	}
	// Flip the last character of the first secret.
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	last := lines[0][len(lines[0])-1]
	lines[0] = lines[0][:len(lines[0])-1] + map[bool]string{true: "A", false: "B"}[last != 'A']
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.bench(t, "storm", "--conns", "2", "--tokens", bad)
	if r.ConnectFailures != 1 || len(r.Notes) == 0 {
		t.Errorf("want one failed connect, got %d (notes %v)", r.ConnectFailures, r.Notes)
	}
}

func TestProvisionAdminAPI(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.AddUser("op", "pw-op", imqtt.RoleOperator)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	args := []string{"provision", "--admin", "http://" + b.Addr("http"), "--admin-user", "op", "--admin-password", "pw-op",
		"--addr", b.Addr("mqtt"), "--users", "5", "--star", "4", "--tokens-out", tokens}
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	friends := [][2]string{{"b0", "b1"}, {"b2", "b3"}, {"b0", "b2"}, {"b0", "b3"}}
	notFriends := [][2]string{{"b1", "b2"}, {"b0", "b4"}, {"b3", "b4"}}
	err := b.Store().View(func(tx storage.Tx) error {
		for _, p := range friends {
			if ok, err := tx.AreFriends(p[0], p[1]); err != nil || !ok {
				t.Errorf("%s and %s should be friends (%v)", p[0], p[1], err)
			}
		}
		for _, p := range notFriends {
			if ok, err := tx.AreFriends(p[0], p[1]); err != nil || ok {
				t.Errorf("%s and %s should not be friends (%v)", p[0], p[1], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := readTokens(tokens)
	if err != nil || len(tk) != 5 {
		t.Fatalf("tokens: %v %v", tk, err)
	}
	// Provisioning again finds the users there and still succeeds.
	out.Reset()
	if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "0 users created, 5 already there") {
		t.Fatalf("second provision: exit %d: %s %s", code, out.String(), errb.String())
	}
	c, err := b.Dial(brokertest.Opts{User: "b4", Password: tk["b4"], ClientID: "b4-x"})
	if err != nil {
		t.Fatalf("token of b4 does not log in: %v", err)
	}
	c.Close()
}

func TestProvisionStoreTwice(t *testing.T) {
	dir := t.TempDir()
	args := []string{"provision", "--provision-store", dir, "--users", "3", "--same-password", "secret"}
	for i, want := range []string{"3 users created, 0 already there", "0 users created, 3 already there"} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), want) {
			t.Fatalf("run %d: exit %d, out %q, err %q", i, code, out.String(), errb.String())
		}
	}
	b := brokertest.StartIn(t, dir, nil)
	c, err := b.Dial(brokertest.Opts{User: "b2", Password: "secret", ClientID: "b2-x"})
	if err != nil {
		t.Fatalf("--same-password user does not log in: %v", err)
	}
	c.Close()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no mode", nil, "usage"},
		{"unknown mode", []string{"flood"}, "unknown mode"},
		{"bad flag", []string{"pairs", "--nope"}, "flag provided but not defined"},
		{"no bound", []string{"pairs"}, "--count or --duration"},
		{"qos 2", []string{"raw", "--count", "1", "--qos", "2"}, "--qos 2"},
		{"tiny body", []string{"pairs", "--count", "1", "--size", "5"}, "--size 5"},
		{"anonymous im", []string{"pairs", "--count", "1", "--anonymous"}, "IM mode needs users"},
		{"provision nowhere", []string{"provision"}, "exactly one of"},
		{"provision both", []string{"provision", "--provision-store", "x", "--admin", "http://x"}, "exactly one of"},
		{"star too big", []string{"provision", "--provision-store", "x", "--users", "3", "--star", "4"}, "--star 4"},
		{"fanout of one", []string{"fanout", "--members", "1"}, "--members 1"},
		{"stray argument", []string{"storm", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q, want 2 and %q", code, errb.String(), tt.want)
			}
		})
	}
}

func TestIdleNeedsPID(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"idle", "--conns", "1"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--pid") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestTable(t *testing.T) {
	one := 1
	rs := []Result{
		{Mode: "raw", Label: "mosquitto", QoS: &one, MsgsPerSec: 1000, Latency: &Latency{N: 1, P50: 1, P99: 2, Max: 3}, Broker: &Proc{CPUPercent: 90, RSSPeakKiB: 2048}},
		{Mode: "pairs", Label: "imqtt-im", QoS: &one, MsgsPerSec: 500, Lost: 2},
		{Mode: "raw", Label: "paced-a", QoS: &one, MsgsPerSec: 1000, Rate: 1000},
		{Mode: "pairs", Label: "paced-b", QoS: &one, MsgsPerSec: 990, Rate: 1000},
		{Mode: "idle", Label: "idle", Conns: 10, KiBPerConn: 9.5},
		{Mode: "storm", Label: "storm", Conns: 5, Anonymous: true, Seconds: 0.5},
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "results")
	var buf bytes.Buffer
	buf.WriteString("noise that is not JSON\n")
	for _, r := range rs {
		b, _ := json.Marshal(r)
		buf.Write(b)
		buf.WriteString("\nsummary line\n")
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"table", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	rows := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			rows[f[0]] = sc.Text()
		}
	}
	for label, want := range map[string][]string{
		"mosquitto": {"1.00x", "1000", "90", "2.0 MiB", "unpaced"},
		"imqtt-im":  {"0.50x", "500", " 2 ", "unpaced"},
		"paced-a":   {"1.00x", "1000/s"},
		"paced-b":   {"0.99x"},
		"idle:":     {"10 idle connections: 9.5 KiB"},
		"storm:":    {"5 devices (anonymous)"},
	} {
		for _, w := range want {
			if !strings.Contains(rows[label], w) {
				t.Errorf("row %s = %q, want %q in it", label, rows[label], w)
			}
		}
	}
	out.Reset()
	if code := run([]string{"table", "--base", "imqtt-im", path}, &out, &errb); code != 0 || !strings.Contains(out.String(), "2.00x") {
		t.Errorf("--base: exit %d:\n%s", code, out.String())
	}
}

// BenchmarkPairs drives b.N messages through 20 in-process pairs; run with
// -cpuprofile or -blockprofile to see where the broker spends a load.
func BenchmarkPairs(b *testing.B) {
	for _, mode := range []string{"pairs", "raw"} {
		b.Run(mode, func(b *testing.B) {
			f := start(b, 40, 0, false, func(c *broker.Config) { c.Log.Level = "error" })
			b.ResetTimer()
			r := f.bench(b, mode, "--pairs", "20", "--count", fmt.Sprint(max(b.N, 20)), "--quiet")
			b.StopTimer()
			if r.Lost != 0 {
				b.Errorf("lost %d", r.Lost)
			}
			b.ReportMetric(r.MsgsPerSec, "msg/s")
			if r.Latency != nil {
				b.ReportMetric(r.Latency.P99, "p99-ms")
			}
		})
	}
}
