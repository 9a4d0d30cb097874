package imqtt_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imqtt/imqtt"
)

// requestCorpusDir holds golden request payloads: each file but the .golden
// ones is a payload published to im/req, and its sibling .golden file holds
// the response code a real broker gives it ("ok" for success), in the world
// broker/requests_test.go builds. That test regenerates them with -update.
const requestCorpusDir = "testdata/requests"

// requestCase is one golden request.
type requestCase struct {
	name    string
	payload []byte
	code    string // "ok" or an error code
}

// loadRequestCorpus reads every golden request. It fails the test when the
// directory is missing or a payload has no .golden sibling, so that seeds
// cannot silently vanish.
func loadRequestCorpus(t testing.TB) []requestCase {
	t.Helper()
	ents, err := os.ReadDir(requestCorpusDir)
	if err != nil {
		t.Fatalf("golden requests: %v", err)
	}
	var out []requestCase
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasSuffix(name, ".golden") {
			continue
		}
		payload, err := os.ReadFile(filepath.Join(requestCorpusDir, name))
		if err != nil {
			t.Fatal(err)
		}
		g, err := os.ReadFile(filepath.Join(requestCorpusDir, strings.TrimSuffix(name, filepath.Ext(name))+".golden"))
		if err != nil {
			t.Fatalf("golden request %s has no .golden file: %v", name, err)
		}
		out = append(out, requestCase{name: name, payload: payload, code: strings.TrimSpace(string(g))})
	}
	if len(out) < 20 {
		t.Fatalf("only %d golden requests in %s", len(out), requestCorpusDir)
	}
	return out
}

// expectedRid is the rid a response must echo for payload, decided without
// the decoder under test: the "rid" member of a JSON object when it is a
// string of 1-64 characters, else none (unparseable JSON, not an object, or
// an invalid rid).
func expectedRid(payload []byte) string {
	var m map[string]any
	if json.Unmarshal(payload, &m) != nil {
		return ""
	}
	rid, ok := m["rid"].(string)
	if !ok {
		return ""
	}
	if n := utf8.RuneCountInString(rid); n < 1 || n > imqtt.MaxRidLen {
		return ""
	}
	return rid
}

// The decoder's verdict on every golden request must agree with what the
// broker answers: a payload the broker accepts decodes, and a payload that
// does not decode is a bad_request. Either way the rid comes back exactly
// when the request carried a valid one.
func TestDecodeRequestGolden(t *testing.T) {
	for _, c := range loadRequestCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			r, err := imqtt.DecodeRequest(c.payload)
			if want := expectedRid(c.payload); r.Rid != want {
				t.Errorf("rid = %q; want %q", r.Rid, want)
			}
			if err != nil {
				if c.code != string(imqtt.CodeBadRequest) {
					t.Fatalf("DecodeRequest: %v; but the broker answers %s", err, c.code)
				}
				checkBadRequest(t, err)
				return
			}
			if c.code == "ok" && r.Op == "" {
				t.Fatalf("decoded with an empty op")
			}
		})
	}
}

func checkBadRequest(t *testing.T, err error) {
	t.Helper()
	var e *imqtt.Error
	if !errors.As(err, &e) || e.Code != imqtt.CodeBadRequest || !errors.Is(err, imqtt.ErrBadRequest) {
		t.Fatalf("error %v (%T) is not a bad_request *imqtt.Error", err, err)
	}
	if e.Message == "" {
		t.Fatalf("bad_request with an empty message")
	}
}

func TestDecodeRequest(t *testing.T) {
	ptr := func(s string) *string { return &s }
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name    string
		payload string
		want    imqtt.Request // compared field by field when wantErr is ""
		wantErr string        // "" for success, else a part of the message
		wantRid string        // the rid kept on error
	}{
		{name: "minimal", payload: `{"rid":"r1","op":"friend.list"}`,
			want: imqtt.Request{Rid: "r1", Op: "friend.list"}},
		{name: "friend request with note", payload: `{"rid":"a","op":"friend.request","user":"bob","note":"hi"}`,
			want: imqtt.Request{Rid: "a", Op: "friend.request", User: "bob", Note: ptr("hi")}},
		{name: "empty note differs from none", payload: `{"rid":"a","op":"friend.request","user":"bob","note":""}`,
			want: imqtt.Request{Rid: "a", Op: "friend.request", User: "bob", Note: ptr("")}},
		{name: "group fields", payload: `{"rid":"g","op":"group.create","group":"g1","name":"G","members":["bob","carol"]}`,
			want: imqtt.Request{Rid: "g", Op: "group.create", Group: "g1", Name: ptr("G"), Members: []string{"bob", "carol"}}},
		{name: "numbers", payload: `{"rid":"h","op":"history","conv":"g:x","before":10,"limit":5,"seq":0}`,
			want: imqtt.Request{Rid: "h", Op: "history", Conv: "g:x", Before: i64(10), Limit: i64(5), Seq: i64(0)}},
		{name: "unknown fields ignored", payload: `{"rid":"r","op":"x","from":"mallory","deep":{"a":[1,{"b":null}]}}`,
			want: imqtt.Request{Rid: "r", Op: "x"}},
		{name: "unknown op decodes", payload: `{"rid":"r","op":"no.such.op"}`,
			want: imqtt.Request{Rid: "r", Op: "no.such.op"}},
		{name: "rid of 64 characters", payload: `{"rid":"` + strings.Repeat("é", 64) + `","op":"x"}`,
			want: imqtt.Request{Rid: strings.Repeat("é", 64), Op: "x"}},

		{name: "not JSON", payload: `hello`, wantErr: "invalid JSON"},
		{name: "empty", payload: ``, wantErr: "invalid JSON"},
		{name: "truncated", payload: `{"rid":"r1","op":"fr`, wantErr: "invalid JSON"},
		{name: "array", payload: `[1,2]`, wantErr: "JSON object"},
		{name: "string", payload: `"x"`, wantErr: "JSON object"},
		{name: "number", payload: `1`, wantErr: "JSON object"},
		{name: "null", payload: `null`, wantErr: "rid"},
		{name: "missing rid", payload: `{"op":"friend.list"}`, wantErr: "rid"},
		{name: "empty rid", payload: `{"rid":"","op":"friend.list"}`, wantErr: "rid"},
		{name: "rid too long", payload: `{"rid":"` + strings.Repeat("r", 65) + `","op":"friend.list"}`, wantErr: "rid"},
		{name: "rid a number", payload: `{"rid":5,"op":"friend.list"}`, wantErr: "rid"},
		{name: "rid an object", payload: `{"rid":{},"op":"friend.list"}`, wantErr: "rid"},
		{name: "missing op", payload: `{"rid":"r1"}`, wantErr: "op", wantRid: "r1"},
		{name: "empty op", payload: `{"rid":"r1","op":""}`, wantErr: "op", wantRid: "r1"},
		{name: "op a number", payload: `{"rid":"r1","op":1}`, wantErr: "op", wantRid: "r1"},
		{name: "user a number", payload: `{"rid":"r1","op":"friend.request","user":1}`, wantErr: "user", wantRid: "r1"},
		{name: "rid after a bad field", payload: `{"user":1,"rid":"r1","op":"x"}`, wantErr: "user", wantRid: "r1"},
		{name: "bad field and bad rid", payload: `{"user":1,"rid":"","op":"x"}`, wantErr: "user"},
		{name: "note a number", payload: `{"rid":"r1","op":"friend.request","user":"bob","note":1}`, wantErr: "note", wantRid: "r1"},
		{name: "users not strings", payload: `{"rid":"r1","op":"group.add","users":[1]}`, wantErr: "users", wantRid: "r1"},
		{name: "seq a string", payload: `{"rid":"r1","op":"read","seq":"1"}`, wantErr: "seq", wantRid: "r1"},
		{name: "seq a fraction", payload: `{"rid":"r1","op":"read","seq":1.5}`, wantErr: "seq", wantRid: "r1"},
		{name: "trailing garbage", payload: `{"rid":"r1","op":"x"} y`, wantErr: "invalid JSON"},
		{name: "deep nesting", payload: `{"rid":"r1","op":"x","d":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, wantErr: "JSON"},
		{name: "binary", payload: "\x00\xff\x10{", wantErr: "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := imqtt.DecodeRequest([]byte(tt.payload))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("DecodeRequest(%q) = %+v; want an error", tt.payload, r)
				}
				checkBadRequest(t, err)
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not mention %q", err, tt.wantErr)
				}
				if r.Rid != tt.wantRid {
					t.Errorf("rid on error = %q; want %q", r.Rid, tt.wantRid)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeRequest: %v", err)
			}
			if got, want := mustJSON(t, r), mustJSON(t, tt.want); got != want {
				t.Errorf("DecodeRequest =\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Error messages of a refused request must not echo a huge client value
// back in full: the response goes out in one packet.
func TestDecodeRequestErrorSize(t *testing.T) {
	big := strings.Repeat("x", 60000)
	for _, p := range []string{
		big,
		`{"rid":"r","op":"x","user":"` + big + `",`,
		`{"rid":"r","op":` + big + `}`,
	} {
		_, err := imqtt.DecodeRequest([]byte(p))
		if err == nil {
			t.Fatalf("accepted a broken payload")
		}
		if n := len(imqtt.ErrorMessage(err)); n > 1000 {
			t.Errorf("error message of %d bytes for a %d-byte payload", n, len(p))
		}
	}
}

func TestResponses(t *testing.T) {
	ok := imqtt.OKResponse("r1", map[string]any{"blocked": []string{}})
	if got, want := string(ok), `{"rid":"r1","ok":true,"data":{"blocked":[]}}`; got != want {
		t.Errorf("OKResponse = %s; want %s", got, want)
	}
	// An op with nothing to return still answers with data: {}.
	if got, want := string(imqtt.OKResponse("r2", nil)), `{"rid":"r2","ok":true,"data":{}}`; got != want {
		t.Errorf("OKResponse without data = %s; want %s", got, want)
	}
	e := imqtt.ErrResponse("r3", "", imqtt.Errorf(imqtt.CodeNotFriends, "alice and bob are not friends"))
	if got, want := string(e), `{"rid":"r3","ok":false,"error":{"code":"not_friends","message":"alice and bob are not friends"}}`; got != want {
		t.Errorf("ErrResponse = %s; want %s", got, want)
	}
	// A refused message echoes its id, and a request without a valid rid
	// gets a response without one.
	e = imqtt.ErrResponse("", "c-7f3a", imqtt.ErrNotAllowed)
	if got, want := string(e), `{"id":"c-7f3a","ok":false,"error":{"code":"not_allowed","message":"not allowed"}}`; got != want {
		t.Errorf("ErrResponse for a message = %s; want %s", got, want)
	}
	// Store failures reach clients as "internal" without their text.
	e = imqtt.ErrResponse("r4", "", errors.New("bbolt: /data/imqtt.db: input/output error"))
	if strings.Contains(string(e), "bbolt") || !strings.Contains(string(e), `"code":"internal"`) {
		t.Errorf("ErrResponse for a store failure = %s; want code internal and no detail", e)
	}
}
