package imqtt_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imqtt/imqtt"
)

func TestDecodeMessage(t *testing.T) {
	const max = 1024
	id64 := strings.Repeat("é", 64)
	tests := []struct {
		name     string
		payload  string
		wantCode imqtt.Code // "" for success
		wantID   string     // the id, kept on error when valid
		wantType string
		wantBody string
	}{
		{name: "full", payload: `{"id":"c-7f3a","body":"hello","type":"text"}`, wantID: "c-7f3a", wantType: "text", wantBody: `"hello"`},
		{name: "defaults", payload: `{"body":"hi"}`, wantType: "text", wantBody: `"hi"`},
		{name: "custom type", payload: `{"body":"x","type":"image/png"}`, wantType: "image/png", wantBody: `"x"`},
		{name: "object body compacted", payload: `{"body": { "a" : [1, 2 ,{"b":null}] } }`, wantType: "text", wantBody: `{"a":[1,2,{"b":null}]}`},
		{name: "number body", payload: `{"body":42}`, wantType: "text", wantBody: `42`},
		{name: "null body", payload: `{"body":null}`, wantType: "text", wantBody: `null`},
		{name: "empty string body", payload: `{"body":""}`, wantType: "text", wantBody: `""`},
		{name: "escapes kept", payload: `{"body":"a\"b\\c\u00e9\n"}`, wantType: "text", wantBody: `"a\"b\\c\u00e9\n"`},
		{name: "id of 64 characters", payload: `{"id":"` + id64 + `","body":1}`, wantID: id64, wantType: "text", wantBody: `1`},
		{name: "type of 32 characters", payload: `{"body":1,"type":"` + strings.Repeat("t", 32) + `"}`, wantType: strings.Repeat("t", 32), wantBody: `1`},
		{name: "from ignored", payload: `{"body":"x","from":"bob","conv":"dm:a:b","seq":9}`, wantType: "text", wantBody: `"x"`},

		{name: "not JSON", payload: `hello`, wantCode: imqtt.CodeBadRequest},
		{name: "empty", payload: ``, wantCode: imqtt.CodeBadRequest},
		{name: "array", payload: `[{"body":"x"}]`, wantCode: imqtt.CodeBadRequest},
		{name: "string", payload: `"x"`, wantCode: imqtt.CodeBadRequest},
		{name: "missing body", payload: `{"id":"m1"}`, wantCode: imqtt.CodeBadRequest, wantID: "m1"},
		{name: "missing body no id", payload: `{"type":"text"}`, wantCode: imqtt.CodeBadRequest},
		{name: "id too long", payload: `{"id":"` + strings.Repeat("i", 65) + `","body":"x"}`, wantCode: imqtt.CodeBadRequest},
		{name: "id empty", payload: `{"id":"","body":"x"}`, wantCode: imqtt.CodeBadRequest},
		{name: "id a number", payload: `{"id":7,"body":"x"}`, wantCode: imqtt.CodeBadRequest},
		{name: "type too long", payload: `{"id":"m2","body":"x","type":"` + strings.Repeat("t", 33) + `"}`, wantCode: imqtt.CodeBadRequest, wantID: "m2"},
		{name: "type empty", payload: `{"id":"m3","body":"x","type":""}`, wantCode: imqtt.CodeBadRequest, wantID: "m3"},
		{name: "type a number", payload: `{"id":"m4","body":"x","type":1}`, wantCode: imqtt.CodeBadRequest, wantID: "m4"},
		{name: "id kept before a bad type", payload: `{"type":1,"id":"m5","body":"x"}`, wantCode: imqtt.CodeBadRequest, wantID: "m5"},
		{name: "truncated", payload: `{"id":"m6","body":"x`, wantCode: imqtt.CodeBadRequest},
		{name: "trailing garbage", payload: `{"id":"m7","body":"x"}]`, wantCode: imqtt.CodeBadRequest},
		{name: "over the limit", payload: `{"id":"m9","body":"` + strings.Repeat("x", max) + `"}`, wantCode: imqtt.CodeTooLarge},
		{name: "binary", payload: "\x00\xff\xfe{\"body\":1}", wantCode: imqtt.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := imqtt.DecodeMessage([]byte(tt.payload), max)
			if m.ID != tt.wantID {
				t.Errorf("id = %q; want %q", m.ID, tt.wantID)
			}
			if tt.wantCode != "" {
				if err == nil {
					t.Fatalf("DecodeMessage accepted %q", tt.payload)
				}
				if got := imqtt.ErrorCode(err); got != tt.wantCode {
					t.Fatalf("code = %s (%v); want %s", got, err, tt.wantCode)
				}
				var e *imqtt.Error
				if !errors.As(err, &e) || e.Message == "" {
					t.Fatalf("error %v carries no client message", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if m.Type != tt.wantType || string(m.Body) != tt.wantBody {
				t.Errorf("type, body = %q, %s; want %q, %s", m.Type, m.Body, tt.wantType, tt.wantBody)
			}
		})
	}
}

// Nesting deeper than encoding/json allows is unparseable, not a crash; as
// the whole payload is rejected unread, no id is echoed.
func TestDecodeMessageDeepNesting(t *testing.T) {
	p := []byte(`{"id":"m8","body":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`)
	m, err := imqtt.DecodeMessage(p, 64<<10)
	if imqtt.ErrorCode(err) != imqtt.CodeBadRequest || m.ID != "" {
		t.Fatalf("DecodeMessage of 10,001-deep nesting = %q, %v; want bad_request and no id", m.ID, err)
	}
	p = []byte(`{"id":"m9","body":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}`)
	if m, err := imqtt.DecodeMessage(p, 64<<10); err != nil || m.ID != "m9" || len(m.Body) != 18000 {
		t.Fatalf("DecodeMessage of 9,000-deep nesting = %q, %d bytes, %v; want it accepted", m.ID, len(m.Body), err)
	}
}

// The limit is on the payload as published, in bytes: exactly max passes.
func TestDecodeMessageLimit(t *testing.T) {
	const max = 256
	pad := func(n int) []byte {
		p := []byte(`{"body":"` + strings.Repeat("x", n-len(`{"body":""}`)) + `"}`)
		if len(p) != n {
			t.Fatalf("built %d bytes, want %d", len(p), n)
		}
		return p
	}
	if _, err := imqtt.DecodeMessage(pad(max), max); err != nil {
		t.Errorf("payload of exactly max bytes: %v", err)
	}
	if _, err := imqtt.DecodeMessage(pad(max+1), max); !errors.Is(err, imqtt.ErrTooLarge) {
		t.Errorf("payload of max+1 bytes: %v; want too_large", err)
	}
}

// A stored message is delivered as Encode writes it: valid JSON, fields in
// the order of PROTOCOL.md section 4, client strings escaped.
func TestMessageEncode(t *testing.T) {
	m := imqtt.Message{Conv: imqtt.DMConv("bob", "alice"), Seq: 17, ID: "c-7f3a", From: "alice", TS: 1764250000123, Type: "text", Body: json.RawMessage(`"hello"`)}
	want := `{"conv":"dm:alice:bob","seq":17,"id":"c-7f3a","from":"alice","ts":1764250000123,"type":"text","body":"hello"}`
	if got := string(m.Encode()); got != want {
		t.Errorf("Encode =\n%s\nwant\n%s", got, want)
	}
	for _, s := range []string{"a\"b", "back\\slash", "ctl\x01\x1f", "é ü 中", "\u2028\u2029", "<script>&"} {
		m := imqtt.Message{Conv: "g:x", Seq: 1, ID: s, From: "alice", TS: 1, Type: s, Body: json.RawMessage(`{"k":[1]}`)}
		var back struct {
			ID   string          `json:"id"`
			Type string          `json:"type"`
			Body json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal(m.Encode(), &back); err != nil {
			t.Fatalf("Encode with %q is not JSON: %v: %s", s, err, m.Encode())
		}
		if back.ID != s || back.Type != s || string(back.Body) != `{"k":[1]}` {
			t.Errorf("round trip of %q gave id %q type %q body %s", s, back.ID, back.Type, back.Body)
		}
	}
}

// A body with bytes that are not UTF-8 inside a JSON string passes
// encoding/json's syntax check, and json.Compact copies it as it is: the
// stored and delivered message would then not be JSON (RFC 8259 requires
// UTF-8). It must be refused or repaired.
func TestDecodeMessageInvalidUTF8Body(t *testing.T) {
	m, err := imqtt.DecodeMessage([]byte("{\"id\":\"m1\",\"body\":\"a\xffb\"}"), 1024)
	if err != nil {
		if imqtt.ErrorCode(err) != imqtt.CodeBadRequest || m.ID != "m1" {
			t.Fatalf("refused with %v, id %q; want bad_request echoing m1", err, m.ID)
		}
		return
	}
	if !utf8.Valid(m.Body) {
		t.Fatalf("accepted body %q is not UTF-8", m.Body)
	}
}
