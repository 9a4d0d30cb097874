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
	HeapKiB    int64   `json:"heap_kib,omitempty"`
	StoreKiB   int64   `json:"store_kib,omitempty"`
	Goroutines int64   `json:"goroutines,omitempty"`
}

// Soak is what a soak run adds to its Result.
type Soak struct {
	Samples []soakSample `json:"samples"`
	// WarmKiB is the broker's average memory over the first half of the run
	// after warm-up (the first fifth), EndKiB over the second half;
	// GrowthPct compares them. The
	// memory is the Go heap from /stats when --stats is given, else RSS:
	// RSS also counts the pages of the store file bbolt maps, which grows
	// with every stored message (history is kept), so it is not flat in a
	// healthy broker.
	Measure   string  `json:"measure"`
	WarmKiB   int64   `json:"warm_kib,omitempty"`
	EndKiB    int64   `json:"end_kib,omitempty"`
	GrowthPct float64 `json:"growth_pct"`
	Flat      bool    `json:"flat"`
}

// runSoak is pairs mode held for a long time at a steady pace, with the
// broker's RSS (from /proc, needs --pid) and goroutines (from GET /stats,
// needs --stats) sampled every --sample. RSS counts as flat when the end is
// within --flat-pct of the level after warm-up.
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
					s.RSSKiB = p.RSSKiB
				}
			}
			if o.statsURL != "" {
				s.Goroutines, s.HeapKiB, s.StoreKiB = brokerFigures(o.statsURL)
			}
			ss = append(ss, s)
			progress(stderr, o, "soak %5.0fs: broker RSS %d KiB, heap %d KiB, store %d KiB, goroutines %d",
				s.At, s.RSSKiB, s.HeapKiB, s.StoreKiB, s.Goroutines)
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
	sk := &Soak{Samples: samples, Measure: "rss"}
	mem := func(s soakSample) int64 { return s.RSSKiB }
	if o.statsURL != "" {
		sk.Measure = "heap"
		mem = func(s soakSample) int64 { return s.HeapKiB }
	}
	// A single heap sample depends on where the GC cycle stands, so the
	// average of the samples of the first half after warm-up (the first
	// fifth) is compared with the average of the second half.
	warmAt := o.duration.Seconds() / 5
	var after []int64
	for _, s := range samples {
		if s.At >= warmAt && s.At <= o.duration.Seconds() && mem(s) > 0 {
			after = append(after, mem(s))
		}
	}
	if n := len(after); n >= 2 {
		avg := func(v []int64) int64 {
			var t int64
			for _, x := range v {
				t += x
			}
			return t / int64(len(v))
		}
		sk.WarmKiB, sk.EndKiB = avg(after[:n/2]), avg(after[n/2:])
	}
	if sk.WarmKiB > 0 {
		sk.GrowthPct = 100 * float64(sk.EndKiB-sk.WarmKiB) / float64(sk.WarmKiB)
		sk.Flat = sk.GrowthPct <= o.flatPct
		verdict := "flat"
		if !sk.Flat {
			verdict = fmt.Sprintf("growing (over %.0f%%)", o.flatPct)
		}
		res.note("soak: broker %s averages %d KiB in the first half after warm-up, %d KiB in the second (%+.1f%%): %s", sk.Measure, sk.WarmKiB, sk.EndKiB, sk.GrowthPct, verdict)
	} else {
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
