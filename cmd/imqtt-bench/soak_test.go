package main

import (
	"fmt"
	"testing"
)

// A short soak: messages flow at the pace asked, nothing is lost or
// duplicated, and the broker is sampled (RSS from /proc, goroutines from
// /stats) at least at the start, during and at the end.
func TestSoak(t *testing.T) {
	f := start(t, 20, 0, false, nil)
	r := f.bench(t, "soak", "--pairs", "10", "--duration", "1500ms", "--rate", "200", "--sample", "250ms",
		"--stats", "http://"+f.b.Addr("http")+"/stats", "--flat-pct", "1000")
	if r.Lost != 0 || r.Duplicates != 0 || r.Acked == 0 || r.Unique != r.Acked {
		t.Fatalf("acked %d unique %d lost %d dup %d (notes %v)", r.Acked, r.Unique, r.Lost, r.Duplicates, r.Notes)
	}
	t.Logf("seconds %.1f notes %v", r.Seconds, r.Notes)
	if r.Soak == nil || len(r.Soak.Samples) < 4 {
		t.Fatalf("soak samples: %+v", r.Soak)
	}
	withG := 0
	for _, s := range r.Soak.Samples {
		if s.RSSKiB <= 0 || s.AnonKiB <= 0 || s.AnonKiB > s.RSSKiB || s.FileKiB > s.RSSKiB {
			t.Fatalf("sample without a consistent RSS split: %+v", s)
		}
		if s.Goroutines > 0 && s.HeapKiB > 0 && s.StoreKiB > 0 {
			withG++
		}
	}
	// /stats may time out on a loaded machine; most samples must have it.
	if withG < len(r.Soak.Samples)/2 {
		t.Fatalf("only %d of %d samples have the /stats figures", withG, len(r.Soak.Samples))
	}
	var judged []string
	for _, tr := range r.Soak.Trends {
		if tr.WarmKiB <= 0 || tr.EndKiB <= 0 || !tr.Flat {
			t.Fatalf("trend %+v", tr)
		}
		judged = append(judged, tr.Measure)
	}
	if fmt.Sprint(judged) != "[rss_anon heap]" || !r.Soak.Flat {
		t.Fatalf("soak verdict: judged %v, flat %v", judged, r.Soak.Flat)
	}
}

func TestTrend(t *testing.T) {
	// Samples every 10 s over 100 s: warm-up ends at 20 s.
	series := func(v ...int64) []soakSample {
		var ss []soakSample
		for i, x := range v {
			ss = append(ss, soakSample{At: float64(10 * i), AnonKiB: x})
		}
		return ss
	}
	anon := func(s soakSample) int64 { return s.AnonKiB }
	tests := []struct {
		name      string
		samples   []soakSample
		ok, flat  bool
		warm, end int64
	}{
		// The warm-up samples (0 and 10 s) do not count, nor do samples after the end.
		{"flat after warm-up", series(10, 50, 100, 104, 96, 100, 100, 102, 98, 100, 100, 900), true, true, 100, 100},
		{"growing", series(10, 50, 100, 100, 100, 100, 120, 120, 120, 120, 120), true, false, 100, 120},
		{"shrinking is flat", series(100, 100, 200, 200, 200, 100, 100, 100, 100, 100, 100), true, true, 175, 100},
		{"missing samples ignored", series(0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 100), true, true, 100, 100},
		{"too few samples", series(100, 100, 100), false, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, ok := trend("rss_anon", tt.samples, anon, 20, 100, 10)
			if ok != tt.ok || (ok && (tr.Flat != tt.flat || tr.WarmKiB != tt.warm || tr.EndKiB != tt.end)) {
				t.Fatalf("trend = %+v, %v; want ok %v flat %v warm %d end %d", tr, ok, tt.ok, tt.flat, tt.warm, tt.end)
			}
		})
	}
}
