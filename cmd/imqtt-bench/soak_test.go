package main

import (
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
		if s.RSSKiB <= 0 {
			t.Fatalf("sample without RSS: %+v", s)
		}
		if s.Goroutines > 0 && s.HeapKiB > 0 && s.StoreKiB > 0 {
			withG++
		}
	}
	// /stats may time out on a loaded machine; most samples must have it.
	if withG < len(r.Soak.Samples)/2 {
		t.Fatalf("only %d of %d samples have the /stats figures", withG, len(r.Soak.Samples))
	}
	if r.Soak.Measure != "heap" || r.Soak.WarmKiB == 0 || !r.Soak.Flat {
		t.Fatalf("soak verdict: %+v", r.Soak)
	}
}
