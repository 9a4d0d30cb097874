package imqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Request is a request of PROTOCOL.md section 5 as published to im/req. Only
// the fields its op uses are read; optional fields are pointers so that
// absent and zero differ.
type Request struct {
	Rid     string   `json:"rid"`
	Op      string   `json:"op"`
	User    string   `json:"user"`
	Note    *string  `json:"note"`
	Group   string   `json:"group"`
	Name    *string  `json:"name"`
	Members []string `json:"members"`
	Users   []string `json:"users"`
	Conv    string   `json:"conv"`
	Before  *int64   `json:"before"`
	After   *int64   `json:"after"`
	Limit   *int64   `json:"limit"`
	Seq     *int64   `json:"seq"`
}

// MaxRidLen is the longest rid, in characters.
const MaxRidLen = 64

// DecodeRequest parses a request. On error the returned Request still holds
// the rid when it was present and valid, so the error response can echo it.
// Every error is an *Error with CodeBadRequest that names the problem.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	err := json.Unmarshal(b, &r)
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.As(err, &te) && te.Field == "":
		r = Request{}
		return r, Errorf(CodeBadRequest, "a request must be a JSON object")
	case errors.As(err, &te):
		if te.Field == "rid" {
			r.Rid = ""
		}
		if ok, _ := validRid(r.Rid); !ok {
			r.Rid = ""
		}
		return r, Errorf(CodeBadRequest, "field %s: must be %s", te.Field, jsonKind(te.Type.Kind().String()))
	default:
		return Request{}, Errorf(CodeBadRequest, "invalid JSON: %s", jsonErr(err))
	}
	if ok, why := validRid(r.Rid); !ok {
		r.Rid = ""
		return r, Errorf(CodeBadRequest, "rid: %s", why)
	}
	if r.Op == "" {
		return r, Errorf(CodeBadRequest, "op is required")
	}
	return r, nil
}

func validRid(rid string) (bool, string) {
	switch n := utf8.RuneCountInString(rid); {
	case n == 0:
		return false, "is required (1-64 characters)"
	case n > MaxRidLen:
		return false, "must be at most 64 characters"
	}
	return true, ""
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice":
		return "an array of strings"
	case "int64", "int", "uint64":
		return "an integer"
	case "ptr":
		return "of another type"
	}
	return "of another type"
}

// jsonErr shortens encoding/json's messages to what a client can act on.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return err.Error()
}

// CheckLen checks that a string field has between min and max characters.
func CheckLen(field, v string, min, max int) error {
	n := utf8.RuneCountInString(v)
	if n < min || n > max {
		if min == 0 {
			return Errorf(CodeBadRequest, "%s: must be at most %d characters", field, max)
		}
		return Errorf(CodeBadRequest, "%s: must be %d-%d characters", field, min, max)
	}
	return nil
}

// ErrorBody is the "error" member of a response.
type ErrorBody struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Response is what a device gets on im/u/{me}/res: the answer to a request
// (Rid set) or the error for a refused message (ID set when the message had
// a valid id).
type Response struct {
	Rid   string     `json:"rid,omitempty"`
	ID    string     `json:"id,omitempty"`
	OK    bool       `json:"ok"`
	Data  any        `json:"data,omitempty"` // set on every success, see OKResponse; absent on errors
	Error *ErrorBody `json:"error,omitempty"`
}

// OKResponse encodes a success with data. Every success carries "data"
// (PROTOCOL.md section 5): nil, for an op with nothing to return, becomes {}.
func OKResponse(rid string, data any) []byte {
	if data == nil {
		data = struct{}{}
	}
	b, err := json.Marshal(Response{Rid: rid, OK: true, Data: data})
	if err != nil {
		return ErrResponse(rid, "", err)
	}
	return b
}

// ErrResponse encodes an error response for err, with rid or id.
func ErrResponse(rid, id string, err error) []byte {
	b, _ := json.Marshal(Response{Rid: rid, ID: id, Error: &ErrorBody{Code: ErrorCode(err), Message: ErrorMessage(err)}})
	return b
}
