package imqtt

import "fmt"

// MaxIDLen is the longest user or group id, in characters (all ids are ASCII).
const MaxIDLen = 32

// IDRule states the id rule of PROTOCOL.md section 1, for error messages.
const IDRule = "1-32 characters from a-z 0-9 _ - ., starting with a letter or digit"

// ValidateID checks a user or group id against PROTOCOL.md section 1. The
// error wraps ErrBadRequest and names the rule.
func ValidateID(id string) error {
	if !ValidID(id) {
		return Errorf(CodeBadRequest, "invalid id %q: must be %s", truncate(id, 40), IDRule)
	}
	return nil
}

// ValidID reports whether id is a valid user or group id. It does not
// allocate, so the publish path can call it freely.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Role is a user's role.
type Role string

// Roles of PROTOCOL.md section 1.
const (
	RoleUser     Role = "user"
	RoleOperator Role = "operator"
)

// ParseRole validates a role name; "" means RoleUser.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case "", RoleUser:
		return RoleUser, nil
	case RoleOperator:
		return RoleOperator, nil
	}
	return "", Errorf(CodeBadRequest, "invalid role %q: must be %q or %q", truncate(s, 40), RoleUser, RoleOperator)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ConvID is a conversation id: "dm:{a}:{b}" with a < b in byte order, or
// "g:{group}".
type ConvID string

// DMConv returns the conversation id of the DM between a and b.
func DMConv(a, b string) ConvID {
	if b < a {
		a, b = b, a
	}
	return ConvID("dm:" + a + ":" + b)
}

// GroupConv returns the conversation id of group g.
func GroupConv(g string) ConvID { return ConvID("g:" + g) }

// ParseConv splits a conversation id. For a DM, a and b are the two users and
// group is empty; for a group, group is set. Invalid ids give ErrBadRequest.
func ParseConv(c string) (a, b, group string, err error) {
	switch {
	case len(c) > 2 && c[:2] == "g:":
		if ValidID(c[2:]) {
			return "", "", c[2:], nil
		}
	case len(c) > 3 && c[:3] == "dm:":
		rest := c[3:]
		for i := 0; i < len(rest); i++ {
			if rest[i] == ':' {
				a, b = rest[:i], rest[i+1:]
				if ValidID(a) && ValidID(b) && a < b {
					return a, b, "", nil
				}
				break
			}
		}
	}
	return "", "", "", Errorf(CodeBadRequest, "invalid conv %q", truncate(c, 80))
}

// String implements fmt.Stringer.
func (c ConvID) String() string { return string(c) }

var _ fmt.Stringer = ConvID("")
