package imqtt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"unicode/utf8"
)

// Incoming is a message payload a client published (PROTOCOL.md section 3),
// validated.
type Incoming struct {
	// ID is the client's id, "" when it gave none.
	ID   string
	Type string
	// Body is the compacted JSON value of "body".
	Body json.RawMessage
}

type incomingJSON struct {
	ID   *string         `json:"id"`
	Body json.RawMessage `json:"body"`
	Type *string         `json:"type"`
}

// DecodeMessage validates a message payload of at most max bytes. On error,
// the returned Incoming holds the id if the payload had a valid one, so the
// error can echo it.
func DecodeMessage(b []byte, max int) (Incoming, error) {
	if len(b) > max {
		return Incoming{}, Errorf(CodeTooLarge, "payload of %d bytes is over the limit of %d", len(b), max)
	}
	var in incomingJSON
	err := json.Unmarshal(b, &in)
	var te *json.UnmarshalTypeError
	var m Incoming
	if in.ID != nil && validMsgID(*in.ID) && (err == nil || errors.As(err, &te) && te.Field != "id") {
		m.ID = *in.ID
	}
	switch {
	case err == nil:
	case errors.As(err, &te) && te.Field == "":
		return m, Errorf(CodeBadRequest, "a message must be a JSON object")
	case errors.As(err, &te):
		return m, Errorf(CodeBadRequest, "field %s: must be a string", te.Field)
	default:
		return m, Errorf(CodeBadRequest, "invalid JSON: %s", jsonErr(err))
	}
	if in.ID != nil && !validMsgID(*in.ID) {
		return m, Errorf(CodeBadRequest, "id: must be 1-64 characters")
	}
	if in.Body == nil {
		return m, Errorf(CodeBadRequest, "body is required")
	}
	m.Type = DefaultMessageType
	if in.Type != nil {
		if err := CheckLen("type", *in.Type, 1, MaxMessageTypeLen); err != nil {
			return m, err
		}
		m.Type = *in.Type
	}
	if !utf8.Valid(in.Body) {
		// encoding/json passes invalid UTF-8 inside strings through raw; the
		// stored message must be valid JSON for every client.
		return m, Errorf(CodeBadRequest, "body: invalid UTF-8")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, in.Body); err != nil {
		return m, Errorf(CodeBadRequest, "body: %s", jsonErr(err))
	}
	m.Body = buf.Bytes()
	return m, nil
}

func validMsgID(id string) bool {
	n := utf8.RuneCountInString(id)
	return n >= 1 && n <= MaxMessageIDLen
}

// Message is a stored message as delivered (PROTOCOL.md section 4).
type Message struct {
	Conv ConvID          `json:"conv"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	From string          `json:"from"`
	TS   int64           `json:"ts"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
}

// Encode returns the message's delivery JSON, fields in the order of
// PROTOCOL.md section 4.
func (m *Message) Encode() []byte {
	b := make([]byte, 0, 96+len(m.ID)+len(m.Type)+len(m.Body)+len(m.Conv))
	b = append(b, `{"conv":`...)
	b = strconv.AppendQuote(b, string(m.Conv))
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"from":`...)
	b = strconv.AppendQuote(b, m.From)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, m.TS, 10)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, m.Type)
	b = append(b, `,"body":`...)
	b = append(b, m.Body...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. strconv.AppendQuote is not
// JSON for control and non-ASCII escapes, so client-chosen strings go
// through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			simple = false
			break
		}
	}
	if simple {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s)
	return append(b, q...)
}

var idPrefix = func() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return "s" + hex.EncodeToString(r[:]) + "-"
}()

var idCounter atomic.Uint64

// NewMessageID returns an id for a message sent without one: unique within
// this process run and, by its random prefix, across runs.
func NewMessageID() string {
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 36)
}
