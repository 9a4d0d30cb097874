package imqtt_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imqtt/imqtt"
)

// FuzzDecodeRequest feeds the request decoder arbitrary bytes. It must never
// panic; a success carries a rid of 1-64 characters and an op; every failure
// is a bad_request whose kept rid, if any, is itself valid.
func FuzzDecodeRequest(f *testing.F) {
	for _, c := range loadRequestCorpus(f) {
		f.Add(c.payload)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := imqtt.DecodeRequest(payload)
		if err != nil {
			var e *imqtt.Error
			if !errors.As(err, &e) || e.Code != imqtt.CodeBadRequest {
				t.Fatalf("error %v (%T) is not a bad_request", err, err)
			}
			if r.Rid != "" && !validRid(r.Rid) {
				t.Fatalf("invalid rid %q kept on error", r.Rid)
			}
			return
		}
		if !validRid(r.Rid) {
			t.Fatalf("accepted rid %q (%d characters)", r.Rid, utf8.RuneCountInString(r.Rid))
		}
		if r.Op == "" {
			t.Fatalf("accepted an empty op")
		}
		if want := expectedRid(payload); want != r.Rid {
			// Only encoding/json's case-insensitive member matching may
			// make the two readings differ ("RID" fills rid).
			if !caseFoldedKey(payload, "rid") {
				t.Fatalf("rid = %q; a plain JSON reading gives %q", r.Rid, want)
			}
		}
	})
}

func validRid(rid string) bool {
	n := utf8.RuneCountInString(rid)
	return n >= 1 && n <= imqtt.MaxRidLen
}

// caseFoldedKey reports whether payload is a JSON object with a member
// whose name equals key only case-insensitively.
func caseFoldedKey(payload []byte, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil {
		return false
	}
	for k := range m {
		if k != key && strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}
