package imqtt_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/imqtt/imqtt"
)

// FuzzDecodeMessage feeds the message decoder arbitrary payloads and limits.
// It must never panic; a success has a valid or empty id, a type of 1-32
// characters and a non-empty body of compact JSON; every failure is
// bad_request or too_large (the latter exactly when over the limit), with a
// valid or empty id.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"id":"c-7f3a","body":"hello","type":"text"}`,
		`{"body":{"a":[1,2,{"b":null}]}}`,
		`{"body":null}`,
		`{"id":"","body":1}`,
		`{"id":"m","type":"","body":1}`,
		`{"type":1,"id":"m","body":"x"}`,
		`{"id":"m","body":"x"`,
		`{"body":"a\"b\\c\u00e9"}`,
		`[{"body":1}]`,
		"{\"body\":\"a\xffb\"}",
		`{"ID":"x","BODY":2}`,
	} {
		f.Add([]byte(s), 1024)
	}
	for _, c := range loadRequestCorpus(f) {
		f.Add(c.payload, 64<<10)
	}
	f.Fuzz(func(t *testing.T, payload []byte, max int) {
		if max < 0 {
			max = -max
		}
		m, err := imqtt.DecodeMessage(payload, max)
		if m.ID != "" && !validMsgID(m.ID) {
			t.Fatalf("id %q (%d characters) returned", m.ID, utf8.RuneCountInString(m.ID))
		}
		if len(payload) > max {
			if imqtt.ErrorCode(err) != imqtt.CodeTooLarge {
				t.Fatalf("%d bytes over a limit of %d: %v; want too_large", len(payload), max, err)
			}
			return
		}
		if err != nil {
			if c := imqtt.ErrorCode(err); c != imqtt.CodeBadRequest {
				t.Fatalf("error %v has code %s; want bad_request", err, c)
			}
			return
		}
		if n := utf8.RuneCountInString(m.Type); n < 1 || n > imqtt.MaxMessageTypeLen {
			t.Fatalf("type %q of %d characters", m.Type, n)
		}
		if len(m.Body) == 0 || !json.Valid(m.Body) {
			t.Fatalf("body %q is not JSON", m.Body)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, m.Body); err != nil || !bytes.Equal(buf.Bytes(), m.Body) {
			t.Fatalf("body %q is not compact", m.Body)
		}
	})
}

func validMsgID(id string) bool {
	n := utf8.RuneCountInString(id)
	return n >= 1 && n <= imqtt.MaxMessageIDLen
}
