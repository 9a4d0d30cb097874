package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// soakSample is one look at the broker during a soak.
type soakSample struct {
	At         float64 `json:"at_s"`
	RSSKiB     int64   `json:"rss_kib,omitempty"`
	Goroutines int64   `json:"goroutines,omitempty"`
}

// Soak is what a soak run adds to its Result.
type Soak struct {
	Samples []soakSample `json:"samples"`
	// WarmRSSKiB is the broker's RSS at the end of the warm-up (the first
	// fifth of the run), EndRSSKiB at the end; GrowthPct compares them.
	WarmRSSKiB int64   `json:"warm_rss_kib,omitempty"`
	EndRSSKiB  int64   `json:"end_rss_kib,omitempty"`
	GrowthPct  float64 `json:"rss_growth_pct"`
	Flat       bool    `json:"flat"`
}

// runSoak is pairs mode held for a long time at a steady pace, with the
// broker's RSS (from /proc, needs --pid) and goroutines (from GET /stats,
// needs --stats) sampled every --sample. RSS counts as flat when the end is
// within --flat-pct of the level after warm-up.
func runSoak(o *options, stderr io.Writer) (*Result, error) {
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
				s.Goroutines = brokerGoroutines(o.statsURL)
			}
			ss = append(ss, s)
			progress(stderr, o, "soak %5.0fs: broker RSS %d KiB, goroutines %d", s.At, s.RSSKiB, s.Goroutines)
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
	sk := &Soak{Samples: samples}
	warmAt := o.duration.Seconds() / 5
	for _, s := range samples {
		if s.At >= warmAt && sk.WarmRSSKiB == 0 {
			sk.WarmRSSKiB = s.RSSKiB
		}
		sk.EndRSSKiB = s.RSSKiB
	}
	if sk.WarmRSSKiB > 0 {
		sk.GrowthPct = 100 * float64(sk.EndRSSKiB-sk.WarmRSSKiB) / float64(sk.WarmRSSKiB)
		sk.Flat = sk.GrowthPct <= o.flatPct
		res.note("soak: broker RSS %d KiB after warm-up, %d KiB at the end (%+.1f%%): %s", sk.WarmRSSKiB, sk.EndRSSKiB, sk.GrowthPct,
			map[bool]string{true: "flat", false: fmt.Sprintf("growing (over %.0f%%)", o.flatPct)}[sk.Flat])
	} else {
		res.note("soak: no RSS samples after warm-up (give --pid and a --duration several times --sample)")
	}
	res.Soak = sk
	return res, err
}

// brokerGoroutines reads broker.threads (goroutines) from GET /stats.
func brokerGoroutines(url string) int64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Broker struct {
			Threads int64 `json:"threads"`
		} `json:"broker"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	return st.Broker.Threads
}
