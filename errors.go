package imqtt

import (
	"errors"
	"fmt"
)

// Code is a protocol error code of PROTOCOL.md section 5, as it appears in the
// "code" field of an error response.
type Code string

// The error codes of PROTOCOL.md section 5.
const (
	CodeBadRequest  Code = "bad_request"
	CodeTooLarge    Code = "too_large"
	CodeNoSuchUser  Code = "no_such_user"
	CodeNoSuchGroup Code = "no_such_group"
	CodeNotFriends  Code = "not_friends"
	CodeNotAllowed  Code = "not_allowed"
	CodeNotMember   Code = "not_member"
	CodeNotOwner    Code = "not_owner"
	CodeRateLimited Code = "rate_limited"
	CodeInternal    Code = "internal"
)

// ReasonCode is the MQTT 5 PUBACK reason code that PROTOCOL.md section 5 pairs
// with the error code.
func (c Code) ReasonCode() byte {
	switch c {
	case CodeBadRequest, CodeTooLarge:
		return 0x99
	case CodeNoSuchUser, CodeNoSuchGroup:
		return 0x90
	case CodeNotFriends, CodeNotAllowed, CodeNotMember, CodeNotOwner:
		return 0x87
	case CodeRateLimited:
		return 0x97
	default:
		return 0x80
	}
}

// Error is an error that carries a protocol code and a message meant for the
// client. Sentinels below are *Error values; wrap them with Errorf to add
// detail while keeping errors.Is working.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is makes every *Error with the same code match, so that an error built with
// Errorf(CodeNotFriends, ...) satisfies errors.Is(err, ErrNotFriends).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels, one per protocol code. Match them with errors.Is.
var (
	ErrBadRequest  = &Error{CodeBadRequest, "bad request"}
	ErrTooLarge    = &Error{CodeTooLarge, "payload too large"}
	ErrNoSuchUser  = &Error{CodeNoSuchUser, "no such user"}
	ErrNoSuchGroup = &Error{CodeNoSuchGroup, "no such group"}
	ErrNotFriends  = &Error{CodeNotFriends, "not friends"}
	ErrNotAllowed  = &Error{CodeNotAllowed, "not allowed"}
	ErrNotMember   = &Error{CodeNotMember, "not a member"}
	ErrNotOwner    = &Error{CodeNotOwner, "not the owner"}
	ErrRateLimited = &Error{CodeRateLimited, "rate limited"}
	ErrInternal    = &Error{CodeInternal, "internal error"}
)

// Errors that are not protocol codes: they describe the store and the
// administration commands.
var (
	// ErrExists is returned when creating something (a user, a group) whose id
	// is taken.
	ErrExists = errors.New("already exists")
	// ErrNotFound is returned when a record (a token, a device) does not exist.
	// A missing user is ErrNoSuchUser.
	ErrNotFound = errors.New("not found")
	// ErrStoreLocked is returned when the store file is held by another
	// process, normally a running broker.
	ErrStoreLocked = errors.New("store is held by another process (is a broker running?)")
	// ErrStoreCorrupt is returned when the store file fails its checks.
	ErrStoreCorrupt = errors.New("store is corrupt")
	// ErrSchema is returned when the store was written by an incompatible
	// version of imqtt.
	ErrSchema = errors.New("store schema version not supported")
	// ErrUnauthorized is returned for wrong or missing credentials.
	ErrUnauthorized = errors.New("bad user name or password")
	// ErrClientIDTaken is returned when a client id is bound to another user.
	ErrClientIDTaken = errors.New("client id belongs to another user")
)

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the protocol code of err: the code of the first *Error in
// its chain, or CodeInternal for any other non-nil error. It returns "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the client-facing message of err. Errors that carry no
// code (store failures) are not described to clients, since their text can
// leak internals; they read "internal error".
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return ErrInternal.Message
}
