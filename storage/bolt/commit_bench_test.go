package bolt

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

// benchSendDM does the writes chat.SendDM commits for one accepted DM: the
// message in its conversation's log and a reference in both users' delivery
// streams.
func benchSendDM(db *DB, from, to string, n uint64) error {
	conv := imqtt.DMConv(from, to)
	ts := time.Now().UnixMilli()
	return db.Update(func(tx storage.Tx) error {
		m := imqtt.Message{Conv: conv, ID: fmt.Sprintf("m%d", n), From: from, TS: ts, Type: "text", Body: []byte(`"a message of ordinary length, some sixty bytes of text"`)}
		seq, err := tx.AppendMessage(conv, from, m.ID, ts, func(seq uint64) []byte {
			m.Seq = seq
			return m.Encode()
		})
		if err != nil {
			return err
		}
		for _, u := range []string{from, to} {
			if _, err := tx.AppendMessageRef(u, ts, conv, seq); err != nil {
				return err
			}
		}
		return nil
	})
}

func benchReport(b *testing.B, db *DB, commitsBefore int64) {
	b.Helper()
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "msg/s")
	}
	if c := db.Commits() - commitsBefore; c > 0 {
		b.ReportMetric(float64(b.N)/float64(c), "msg/commit")
	}
}

// BenchmarkAppendDM measures durable DM throughput with about 100
// concurrent senders, each in its own conversation, as 100
// publisher/subscriber pairs would load the store through SendDM.
//
//	go test -run '^$' -bench BenchmarkAppendDM -benchtime 20000x ./storage/bolt/
func BenchmarkAppendDM(b *testing.B) {
	db, err := OpenDir(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var pairs atomic.Int64
	// RunParallel starts parallelism × GOMAXPROCS goroutines.
	b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
	before := db.Commits()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := pairs.Add(1)
		from, to := fmt.Sprintf("pub%03d", p), fmt.Sprintf("sub%03d", p)
		var n uint64
		for pb.Next() {
			n++
			if err := benchSendDM(db, from, to, n); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	benchReport(b, db, before)
	b.ReportMetric(float64(pairs.Load()), "pairs")
}

// BenchmarkAppendDMOnePair is BenchmarkAppendDM with a single sender: every
// message waits for its own commit.
//
//	go test -run '^$' -bench BenchmarkAppendDMOnePair -benchtime 2000x ./storage/bolt/
func BenchmarkAppendDMOnePair(b *testing.B) {
	db, err := OpenDir(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	before := db.Commits()
	b.ResetTimer()
	for i := range b.N {
		if err := benchSendDM(db, "alice", "bob", uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReport(b, db, before)
}
