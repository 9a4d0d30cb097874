package imqtt_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
)

// A 256-byte body, the size the performance targets use.
var benchBody = strings.Repeat("x", 256)

func BenchmarkDecodeMessage(b *testing.B) {
	p := []byte(`{"id":"c-7f3a","type":"text","body":"` + benchBody + `"}`)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := imqtt.DecodeMessage(p, 65536); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeMessage(b *testing.B) {
	body, _ := json.Marshal(benchBody)
	m := imqtt.Message{Conv: imqtt.DMConv("alice", "bob"), Seq: 17, ID: "c-7f3a", From: "alice", TS: 1764250000123, Type: "text", Body: body}
	b.SetBytes(int64(len(m.Encode())))
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Encode()
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	p := []byte(`{"rid":"r1","op":"history","conv":"dm:alice:bob","before":1000,"limit":50}`)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := imqtt.DecodeRequest(p); err != nil {
			b.Fatal(err)
		}
	}
}
