package imqtt_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
)

func TestReasonCode(t *testing.T) {
	// The pairs of PROTOCOL.md section 5.
	tests := []struct {
		code imqtt.Code
		want byte
	}{
		{imqtt.CodeBadRequest, 0x99},
		{imqtt.CodeTooLarge, 0x99},
		{imqtt.CodeNoSuchUser, 0x90},
		{imqtt.CodeNoSuchGroup, 0x90},
		{imqtt.CodeNotFriends, 0x87},
		{imqtt.CodeNotAllowed, 0x87},
		{imqtt.CodeNotMember, 0x87},
		{imqtt.CodeNotOwner, 0x87},
		{imqtt.CodeRateLimited, 0x97},
		{imqtt.CodeInternal, 0x80},
		{imqtt.Code("no_such_code"), 0x80},
		{imqtt.Code(""), 0x80},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := tt.code.ReasonCode(); got != tt.want {
				t.Errorf("Code(%q).ReasonCode() = %#x, want %#x", tt.code, got, tt.want)
			}
		})
	}
}

func TestSentinelCodes(t *testing.T) {
	// Every sentinel must carry the code its name promises, and its wire
	// spelling must be the one of PROTOCOL.md section 5.
	tests := []struct {
		err  *imqtt.Error
		code string
	}{
		{imqtt.ErrBadRequest, "bad_request"},
		{imqtt.ErrTooLarge, "too_large"},
		{imqtt.ErrNoSuchUser, "no_such_user"},
		{imqtt.ErrNoSuchGroup, "no_such_group"},
		{imqtt.ErrNotFriends, "not_friends"},
		{imqtt.ErrNotAllowed, "not_allowed"},
		{imqtt.ErrNotMember, "not_member"},
		{imqtt.ErrNotOwner, "not_owner"},
		{imqtt.ErrRateLimited, "rate_limited"},
		{imqtt.ErrInternal, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if string(tt.err.Code) != tt.code {
				t.Errorf("code = %q, want %q", tt.err.Code, tt.code)
			}
			if tt.err.Message == "" {
				t.Error("sentinel has an empty message")
			}
			if !strings.HasPrefix(tt.err.Error(), tt.code+": ") {
				t.Errorf("Error() = %q, want prefix %q", tt.err.Error(), tt.code+": ")
			}
		})
	}
}

func TestErrorsIs(t *testing.T) {
	notFriends := imqtt.Errorf(imqtt.CodeNotFriends, "%s and %s are not friends", "alice", "bob")
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"sentinel itself", imqtt.ErrNotFriends, imqtt.ErrNotFriends, true},
		{"Errorf same code", notFriends, imqtt.ErrNotFriends, true},
		{"Errorf other code", notFriends, imqtt.ErrNotAllowed, false},
		{"wrapped Errorf", fmt.Errorf("dm: %w", notFriends), imqtt.ErrNotFriends, true},
		{"twice wrapped Errorf", fmt.Errorf("a: %w", fmt.Errorf("b: %w", notFriends)), imqtt.ErrNotFriends, true},
		{"wrapped sentinel", fmt.Errorf("x: %w", imqtt.ErrNoSuchUser), imqtt.ErrNoSuchUser, true},
		{"wrapped sentinel other", fmt.Errorf("x: %w", imqtt.ErrNoSuchUser), imqtt.ErrNoSuchGroup, false},
		{"plain error", errors.New("not friends"), imqtt.ErrNotFriends, false},
		{"non-code sentinel", fmt.Errorf("open: %w", imqtt.ErrStoreLocked), imqtt.ErrStoreLocked, true},
		{"non-code sentinel vs code", fmt.Errorf("open: %w", imqtt.ErrStoreLocked), imqtt.ErrInternal, false},
		{"joined", errors.Join(errors.New("x"), notFriends), imqtt.ErrNotFriends, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestErrorCodeAndMessage(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode imqtt.Code
		wantMsg  string
	}{
		{"nil", nil, "", ""},
		{"sentinel", imqtt.ErrNoSuchGroup, imqtt.CodeNoSuchGroup, "no such group"},
		{"Errorf", imqtt.Errorf(imqtt.CodeNotMember, "not a member of %s", "team"), imqtt.CodeNotMember, "not a member of team"},
		{"wrapped Errorf", fmt.Errorf("group.info: %w", imqtt.Errorf(imqtt.CodeNotOwner, "bob owns team")), imqtt.CodeNotOwner, "bob owns team"},
		{"wrapped sentinel", fmt.Errorf("x: %w", imqtt.ErrRateLimited), imqtt.CodeRateLimited, "rate limited"},
		// Store failures carry no code: their text must not reach clients.
		{"plain error", errors.New("open /secret/path: permission denied"), imqtt.CodeInternal, "internal error"},
		{"wrapped store error", fmt.Errorf("commit: %w", imqtt.ErrStoreCorrupt), imqtt.CodeInternal, "internal error"},
		// The outermost *Error wins.
		{"nested codes", imqtt.Errorf(imqtt.CodeBadRequest, "outer: %v", imqtt.ErrNoSuchUser), imqtt.CodeBadRequest, "outer: no_such_user: no such user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := imqtt.ErrorCode(tt.err); got != tt.wantCode {
				t.Errorf("ErrorCode = %q, want %q", got, tt.wantCode)
			}
			if got := imqtt.ErrorMessage(tt.err); got != tt.wantMsg {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestErrorfFormats(t *testing.T) {
	e := imqtt.Errorf(imqtt.CodeBadRequest, "limit %d out of range", 501)
	if e.Code != imqtt.CodeBadRequest || e.Message != "limit 501 out of range" {
		t.Fatalf("Errorf = %+v", e)
	}
	if e.Error() != "bad_request: limit 501 out of range" {
		t.Errorf("Error() = %q", e.Error())
	}
}
