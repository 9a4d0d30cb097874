package main

import (
	"os"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed: summarize must sort
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one", ms(7), Latency{N: 1, P50: 7, P90: 7, P99: 7, Max: 7}},
		{"two", ms(9, 1), Latency{N: 2, P50: 1, P90: 9, P99: 9, Max: 9}},
		{"hundred", ms(hundred...), Latency{N: 100, P50: 50, P90: 90, P99: 99, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"plain", "42 (imqtt) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 9 0 100 0 0", 3800 * time.Millisecond, true},
		{"name with spaces and parens", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", 30 * time.Millisecond, true},
		{"truncated", "7 (x) R 1 2", 0, false},
		{"no name", "7 x R", 0, false},
		{"garbage ticks", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 a b 0 0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %v, %v; want %v (ok %v)", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestStatusKiB(t *testing.T) {
	status := []byte("Name:\timqtt\nVmPeak:\t  900 kB\nVmHWM:\t   5120 kB\nVmRSS:\t    4096 kB\n")
	tests := []struct {
		key  string
		want int64
	}{{"VmRSS:", 4096}, {"VmHWM:", 5120}, {"VmSwap:", 0}}
	for _, tt := range tests {
		if got := statusKiB(status, tt.key); got != tt.want {
			t.Errorf("%s = %d, want %d", tt.key, got, tt.want)
		}
	}
}

// The monitor reads a live process: this one, which spends some CPU.
func TestMonitorSelf(t *testing.T) {
	m, err := watch(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sink := 0
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		sink++
	}
	_ = sink
	p := m.finish()
	if p.PID != os.Getpid() || p.RSSStartKiB <= 0 || p.RSSPeakKiB < p.RSSStartKiB || p.VmHWMKiB < p.RSSEndKiB || p.CPUSeconds < 0 {
		t.Errorf("implausible figures: %+v", p)
	}
	if _, err := watch(1 << 30); err == nil {
		t.Error("watching a pid that cannot exist succeeded")
	}
	var none *monitor
	if none.finish() != nil {
		t.Error("a nil monitor reported figures")
	}
}

func TestIDsAndBodies(t *testing.T) {
	id := msgID("ab12", 7, 12345)
	run, s, n, ok := parseID(id)
	if !ok || run != "ab12" || s != 7 || n != 12345 {
		t.Errorf("parseID(%q) = %q %d %d %v", id, run, s, n, ok)
	}
	for _, bad := range []string{"", "x", "a.b", "a.1", "a.1.x", "a.-1.2", "c-7f3a"} {
		if _, _, _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
	now := time.Unix(1764250000, 123456789)
	for _, size := range []int{minBody, 256, 1000} {
		body := makeBody(now, size)
		if len(body) != size {
			t.Errorf("size %d: body of %d bytes", size, len(body))
		}
		got, ok := bodyTime(body)
		if !ok || !got.Equal(now) {
			t.Errorf("size %d: bodyTime = %v %v", size, got, ok)
		}
		d, ok := decodeIM([]byte(`{"conv":"dm:a:b","seq":3,"id":"` + id + `","from":"a","ts":1,"type":"text","body":"` + body + `"}`))
		if !ok || d.ID != id || !d.Sent.Equal(now) {
			t.Errorf("decodeIM: %+v %v", d, ok)
		}
		d, ok = decodeRaw(rawPayload(id, body))
		if !ok || d.ID != id || !d.Sent.Equal(now) {
			t.Errorf("decodeRaw: %+v %v", d, ok)
		}
	}
	if _, ok := bodyTime("hello"); ok {
		t.Error("bodyTime accepted a body without a time")
	}
	if _, ok := decodeIM([]byte(`{"body":{"not":"a string"}}`)); ok {
		t.Error("decodeIM accepted a body that is not ours")
	}
}

func TestShare(t *testing.T) {
	tests := []struct{ total, n int }{{10, 3}, {2, 5}, {0, 4}, {100000, 100}}
	for _, tt := range tests {
		sum, lo, hi := 0, tt.total, 0
		for i := range tt.n {
			c := share(tt.total, tt.n, i)
			sum += c
			lo, hi = min(lo, c), max(hi, c)
		}
		if sum != tt.total || hi-lo > 1 {
			t.Errorf("share(%d, %d): sum %d, spread %d..%d", tt.total, tt.n, sum, lo, hi)
		}
	}
}

func TestEdges(t *testing.T) {
	tests := []struct {
		name string
		o    options
		want []edge
	}{
		{"pairs", options{users: 5}, []edge{{0, 1}, {2, 3}}},
		{"pairs and star", options{users: 4, star: 4}, []edge{{0, 1}, {2, 3}, {0, 2}, {0, 3}}},
		{"star only", options{users: 3, star: 3, noPairFriends: true}, []edge{{0, 1}, {0, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.o.edges()
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}
