package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// soakSample is one look at the broker during a soak.
type soakSample struct {
	At         float64 `json:"at_s"`
	RSSKiB     int64   `json:"rss_kib,omitempty"`
	AnonKiB    int64   `json:"rss_anon_kib,omitempty"`
	FileKiB    int64   `json:"rss_file_kib,omitempty"`
	HeapKiB    int64   `json:"heap_kib,omitempty"`
	StoreKiB   int64   `json:"store_kib,omitempty"`
	Goroutines int64   `json:"goroutines,omitempty"`
}

// Soak is what a soak run adds to its Result.
type Soak struct {
	Samples []soakSample `json:"samples"`
	// Trends judges each memory measure the run could sample: "rss_anon"
	// (the broker's anonymous resident pages from /proc, needs --pid) and
	// "heap" (the Go heap from /stats, needs --stats). Total RSS is sampled
	// but not judged: it also counts the pages of the store file bbolt
	// maps, which grows with every stored message (history is kept), so it
	// is not flat in a healthy broker.
	Trends []Trend `json:"trends"`
	// Flat is true when every judged measure is flat.
	Flat bool `json:"flat"`
}

// Trend compares one measure's average over the first half of the run
// after warm-up (the first fifth) with its average over the second half: a
// single sample depends on where the GC cycle stands.
type Trend struct {
	Measure   string  `json:"measure"`
	WarmKiB   int64   `json:"warm_kib"`
	EndKiB    int64   `json:"end_kib"`
	GrowthPct float64 `json:"growth_pct"`
	Flat      bool    `json:"flat"`
}

// trend judges the samples mem picks; ok is false when fewer than two
// samples after warm-up have the measure.
func trend(measure string, samples []soakSample, mem func(soakSample) int64, warmAt, endAt, flatPct float64) (Trend, bool) {
	var after []int64
	for _, s := range samples {
		if s.At >= warmAt && s.At <= endAt && mem(s) > 0 {
			after = append(after, mem(s))
		}
	}
	n := len(after)
	if n < 2 {
		return Trend{}, false
	}
	avg := func(v []int64) int64 {
		var t int64
		for _, x := range v {
			t += x
		}
		return t / int64(len(v))
	}
	tr := Trend{Measure: measure, WarmKiB: avg(after[:n/2]), EndKiB: avg(after[n/2:])}
	tr.GrowthPct = 100 * float64(tr.EndKiB-tr.WarmKiB) / float64(tr.WarmKiB)
	tr.Flat = tr.GrowthPct <= flatPct
	return tr, true
}

// runSoak is pairs mode held for a long time at a steady pace, with the
// broker's RSS (from /proc, needs --pid) and goroutines and heap (from GET
// /stats, needs --stats) sampled every --sample. Memory counts as flat when
// the second half's average is within --flat-pct of the first half's.
func runSoak(o *options, stderr io.Writer) (*Result, error) {
	// The sampler and the load both report progress.
	stderr = &lockedWriter{w: stderr}
	stop := make(chan struct{})
	done := make(chan []soakSample)
	t0 := time.Now()
	go func() {
		var ss []soakSample
		t := time.NewTicker(o.sampleEvery)
		defer t.Stop()
		take := func() {
			s := soakSample{At: time.Since(t0).Seconds()}
			if o.pid > 0 {
				if p, err := readProc(o.pid); err == nil {
					s.RSSKiB, s.AnonKiB, s.FileKiB = p.RSSKiB, p.AnonKiB, p.FileKiB
				}
			}
			if o.statsURL != "" {
				s.Goroutines, s.HeapKiB, s.StoreKiB = brokerFigures(o.statsURL)
			}
			ss = append(ss, s)
			progress(stderr, o, "soak %5.0fs: broker RSS %d KiB (anon %d, file %d), heap %d KiB, store %d KiB, goroutines %d",
				s.At, s.RSSKiB, s.AnonKiB, s.FileKiB, s.HeapKiB, s.StoreKiB, s.Goroutines)
		}
		take()
		for {
			select {
			case <-t.C:
				take()
			case <-stop:
				take()
				done <- ss
				return
			}
		}
	}()
	res, err := runPairs(o, stderr)
	close(stop)
	samples := <-done
	if res == nil {
		return res, err
	}
	sk := &Soak{Samples: samples, Flat: true}
	measures := []struct {
		name string
		mem  func(soakSample) int64
	}{
		{"rss_anon", func(s soakSample) int64 { return s.AnonKiB }},
		{"heap", func(s soakSample) int64 { return s.HeapKiB }},
	}
	for _, m := range measures {
		tr, ok := trend(m.name, samples, m.mem, o.duration.Seconds()/5, o.duration.Seconds(), o.flatPct)
		if !ok {
			continue
		}
		sk.Trends = append(sk.Trends, tr)
		sk.Flat = sk.Flat && tr.Flat
		verdict := "flat"
		if !tr.Flat {
			verdict = fmt.Sprintf("growing (over %.0f%%)", o.flatPct)
		}
		res.note("soak: broker %s averages %d KiB in the first half after warm-up, %d KiB in the second (%+.1f%%): %s", tr.Measure, tr.WarmKiB, tr.EndKiB, tr.GrowthPct, verdict)
	}
	if len(sk.Trends) == 0 {
		sk.Flat = false
		res.note("soak: no memory samples after warm-up (give --pid or --stats, and a --duration several times --sample)")
	}
	res.Soak = sk
	return res, err
}

// brokerFigures reads goroutines (broker.threads), the Go heap
// (broker.memory_alloc) and the store size from GET /stats; zeros when it
// cannot.
func brokerFigures(url string) (goroutines, heapKiB, storeKiB int64) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, 0, 0
	}
	defer resp.Body.Close()
	var st struct {
		StoreBytes int64 `json:"store_bytes"`
		Broker     struct {
			Threads     int64 `json:"threads"`
			MemoryAlloc int64 `json:"memory_alloc"`
		} `json:"broker"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0, 0, 0
	}
	return st.Broker.Threads, st.Broker.MemoryAlloc >> 10, st.StoreBytes >> 10
}
